#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/vec_math.h"

namespace moepp {

float exp_shifted(float* x, int64_t n, float mx) {
  int64_t i = 0;
  float sum = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  const __m512 m = _mm512_set1_ps(mx);
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = reduce_add(acc);
#endif
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  return sum;
}

double exp_shifted(double* x, int64_t n, double mx) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  return sum;
}

void softmax_in_place(float* x, int64_t n) {
  int64_t i = 0;
  float mx = -INFINITY;
#if defined(__AVX512F__)
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  // (The masked form: GCC 12's unmasked _mm512_max_ps warns.)
  for (; i + 16 <= n; i += 16) vmax = _mm512_maskz_max_ps(__mmask16(0xFFFF), vmax, _mm512_loadu_ps(x + i));
  mx = reduce_max(vmax);
#endif
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  const float inv = 1.0f / exp_shifted(x, n, mx);
  i = 0;
#if defined(__AVX512F__)
  const __m512 vinv = _mm512_set1_ps(inv);
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
#endif
  for (; i < n; ++i) x[i] *= inv;
}

void softmax_in_place(double* x, int64_t n) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  const double inv = 1.0 / exp_shifted(x, n, mx);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  parallel_for(rows, [&](int64_t r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T mx = xr[0];
    for (int64_t j = 1; j < cols; ++j) mx = std::max(mx, xr[j]);
    T sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += (yr[j] = std::exp(xr[j] - mx));
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
  }, 64);
}

template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
  parallel_for(rows, [&](int64_t r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T dot = 0;
    for (int64_t j = 0; j < cols; ++j) dot += yr[j] * dyr[j];
    for (int64_t j = 0; j < cols; ++j) dx[r * cols + j] += yr[j] * (dyr[j] - dot);
  }, 64);
}

template void softmax_forward<float>(const float*, float*, int64_t, int64_t);
template void softmax_forward<double>(const double*, double*, int64_t, int64_t);
template void softmax_backward<float>(const float*, const float*, float*, int64_t, int64_t);
template void softmax_backward<double>(const double*, const double*, double*, int64_t, int64_t);

}  // namespace moepp
