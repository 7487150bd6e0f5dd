#include "kernels/rmsnorm.h"

#include <cmath>

#include "core/parallel.h"

namespace moepp {

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, T eps) {
  parallel_for(rows, [&](int64_t r) {
    const T* xr = x + r * D;
    T ss = 0;
    for (int64_t j = 0; j < D; ++j) ss += xr[j] * xr[j];
    const T inv = T(1) / std::sqrt(ss / T(D) + eps);
    rstd[r] = inv;
    for (int64_t j = 0; j < D; ++j) y[r * D + j] = w[j] * (xr[j] * inv);
  }, 16);
}

template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw,
                      int64_t rows, int64_t D) {
  // y_j = w_j x_j r  =>  dx_j = r w_j dy_j - x_j r^3 / D * sum_i(w_i dy_i x_i)
  parallel_for(rows, [&](int64_t r) {
    const T* xr = x + r * D;
    const T* dyr = dy + r * D;
    const T inv = rstd[r];
    T dot = 0;
    for (int64_t j = 0; j < D; ++j) dot += w[j] * dyr[j] * xr[j];
    const T c = dot * inv * inv * inv / T(D);
    for (int64_t j = 0; j < D; ++j) dx[r * D + j] += inv * w[j] * dyr[j] - xr[j] * c;
  }, 16);
  // dw by columns so that no two threads write the same element.
  parallel_for(D, [&](int64_t j) {
    T acc = 0;
    for (int64_t r = 0; r < rows; ++r) acc += dy[r * D + j] * x[r * D + j] * rstd[r];
    dw[j] += acc;
  }, 64);
}

template void rmsnorm_forward<float>(const float*, const float*, float*, float*, int64_t, int64_t, float);
template void rmsnorm_forward<double>(const double*, const double*, double*, double*, int64_t, int64_t, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, const float*, float*, float*, int64_t, int64_t);
template void rmsnorm_backward<double>(const double*, const double*, const double*, const double*, double*, double*, int64_t, int64_t);

}  // namespace moepp
