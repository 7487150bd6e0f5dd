#include "kernels/swiglu.h"

#include <cmath>

#include "core/parallel.h"

namespace moepp {

template <typename T>
void swiglu_forward(const T* u, T* h, int64_t rows, int64_t I) {
  parallel_for(rows, [&](int64_t r) {
    const T* a = u + r * 2 * I;
    const T* b = a + I;
    T* hr = h + r * I;
    for (int64_t j = 0; j < I; ++j) {
      const T sig = T(1) / (T(1) + std::exp(-a[j]));
      hr[j] = a[j] * sig * b[j];
    }
  }, 8);
}

template <typename T>
void swiglu_backward(const T* u, const T* dh, T* du, int64_t rows, int64_t I) {
  parallel_for(rows, [&](int64_t r) {
    const T* a = u + r * 2 * I;
    const T* b = a + I;
    const T* dhr = dh + r * I;
    T* da = du + r * 2 * I;
    T* db = da + I;
    for (int64_t j = 0; j < I; ++j) {
      const T sig = T(1) / (T(1) + std::exp(-a[j]));
      const T silu = a[j] * sig;
      const T dsilu = sig * (T(1) + a[j] * (T(1) - sig));
      da[j] += dhr[j] * b[j] * dsilu;
      db[j] += dhr[j] * silu;
    }
  }, 8);
}

template void swiglu_forward<float>(const float*, float*, int64_t, int64_t);
template void swiglu_forward<double>(const double*, double*, int64_t, int64_t);
template void swiglu_backward<float>(const float*, const float*, float*, int64_t, int64_t);
template void swiglu_backward<double>(const double*, const double*, double*, int64_t, int64_t);

}  // namespace moepp
