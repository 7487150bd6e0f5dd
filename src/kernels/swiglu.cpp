#include "kernels/swiglu.h"

#include <cmath>
#include <type_traits>

#include "core/parallel.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {

// One row of h = silu(a) * b: f32 with AVX-512 goes 16 at a time (masked tail).
template <typename T>
void swiglu_row(const T* a, const T* b, T* h, int64_t I) {
  int64_t j = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    for (; j < I; j += 16) {
      const __mmask16 m = tail_mask16(I - j);
      const __m512 av = _mm512_maskz_loadu_ps(m, a + j), bv = _mm512_maskz_loadu_ps(m, b + j);
      _mm512_mask_storeu_ps(h + j, m, swiglu16(av, bv));
    }
  }
#endif
  for (; j < I; ++j) {
    const T sig = T(1) / (T(1) + std::exp(-a[j]));
    h[j] = a[j] * sig * b[j];
  }
}

// One row of the gradient: da (+)= dh * b * silu'(a), db (+)= dh * silu(a).
template <bool Accumulate, typename T>
void swiglu_row_backward(const T* a, const T* b, const T* dh, T* da, T* db, int64_t I) {
  int64_t j = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; j < I; j += 16) {
      const __mmask16 m = tail_mask16(I - j);
      const __m512 av = _mm512_maskz_loadu_ps(m, a + j), bv = _mm512_maskz_loadu_ps(m, b + j);
      const __m512 g = _mm512_maskz_loadu_ps(m, dh + j), sig = sigmoid16(av);
      const __m512 silu = _mm512_mul_ps(av, sig);
      const __m512 dsilu = _mm512_mul_ps(sig, _mm512_fmadd_ps(av, _mm512_sub_ps(one, sig), one));
      const __m512 da0 = Accumulate ? _mm512_maskz_loadu_ps(m, da + j) : _mm512_setzero_ps();
      const __m512 db0 = Accumulate ? _mm512_maskz_loadu_ps(m, db + j) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(da + j, m, _mm512_fmadd_ps(_mm512_mul_ps(g, bv), dsilu, da0));
      _mm512_mask_storeu_ps(db + j, m, _mm512_fmadd_ps(g, silu, db0));
    }
  }
#endif
  for (; j < I; ++j) {
    const T sig = T(1) / (T(1) + std::exp(-a[j]));
    const T silu = a[j] * sig;
    const T dsilu = sig * (T(1) + a[j] * (T(1) - sig));
    da[j] = (Accumulate ? da[j] : T(0)) + dh[j] * b[j] * dsilu;
    db[j] = (Accumulate ? db[j] : T(0)) + dh[j] * silu;
  }
}

}  // namespace

template <typename T>
void swiglu_forward(const T* u, T* h, int64_t rows, int64_t I) {
  parallel_for(rows, [&](int64_t r) {
    const T* a = u + r * 2 * I;
    swiglu_row(a, a + I, h + r * I, I);
  }, 8);
}

template <typename T>
void swiglu_backward(const T* u, const T* dh, T* du, int64_t rows, int64_t I, bool accumulate) {
  parallel_for(rows, [&](int64_t r) {
    const T* a = u + r * 2 * I;
    T* da = du + r * 2 * I;
    if (accumulate) swiglu_row_backward<true>(a, a + I, dh + r * I, da, da + I, I);
    else swiglu_row_backward<false>(a, a + I, dh + r * I, da, da + I, I);
  }, 8);
}

template void swiglu_forward<float>(const float*, float*, int64_t, int64_t);
template void swiglu_forward<double>(const double*, double*, int64_t, int64_t);
template void swiglu_backward<float>(const float*, const float*, float*, int64_t, int64_t, bool);
template void swiglu_backward<double>(const double*, const double*, double*, int64_t, int64_t, bool);

}  // namespace moepp
