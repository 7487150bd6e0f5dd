#include "kernels/dot.h"

#include <type_traits>

#include "kernels/vec_math.h"

namespace moepp {

namespace {
constexpr int64_t kLanes = 16;

#if defined(__AVX512F__)
// The f32 cases, written out: GCC keeps the generic loops' partial sums in memory. In
// float, the 16 lanes are one register and the ragged tail a masked load (its zero lanes
// add nothing), so the sums group differently from the generic form's; in double, lanes
// 0-7 and 8-15 of each 16 floats are widened into two registers, exactly the generic
// form's grouping.
__m512d widen_lo(__m512 v) { return widen(low_half(v)); }
__m512d widen_hi(__m512 v) { return widen(high_half(v)); }

float dot_f32(const float* a, const float* b, int64_t n) {
  __m512 s = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), s);
  if (d < n) {
    const __mmask16 m = tail_mask16(n - d);
    s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), s);
  }
  return reduce_add(s);
}

void two_dots_f32(const float* x, const float* p, const float* q, int64_t n, float& xp, float& xq) {
  __m512 sp = _mm512_setzero_ps(), sq = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + d);
    sp = _mm512_fmadd_ps(_mm512_loadu_ps(p + d), xv, sp);
    sq = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), xv, sq);
  }
  if (d < n) {
    const __mmask16 m = tail_mask16(n - d);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + d);
    sp = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + d), xv, sp);
    sq = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), xv, sq);
  }
  xp = reduce_add(sp);
  xq = reduce_add(sq);
}

void two_dots_f32_in_f64(const float* x, const float* p, const float* q, int64_t n, double& xp, double& xq) {
  __m512d sp_lo = _mm512_setzero_pd(), sp_hi = _mm512_setzero_pd();
  __m512d sq_lo = _mm512_setzero_pd(), sq_hi = _mm512_setzero_pd();
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    const __m512 xv = _mm512_loadu_ps(x + d), pv = _mm512_loadu_ps(p + d), qv = _mm512_loadu_ps(q + d);
    const __m512d x_lo = widen_lo(xv), x_hi = widen_hi(xv);
    sp_lo = _mm512_fmadd_pd(widen_lo(pv), x_lo, sp_lo);
    sp_hi = _mm512_fmadd_pd(widen_hi(pv), x_hi, sp_hi);
    sq_lo = _mm512_fmadd_pd(widen_lo(qv), x_lo, sq_lo);
    sq_hi = _mm512_fmadd_pd(widen_hi(qv), x_hi, sq_hi);
  }
  xp = reduce_add(_mm512_add_pd(sp_lo, sp_hi));
  xq = reduce_add(_mm512_add_pd(sq_lo, sq_hi));
  for (; d < n; ++d) {
    xp += double(p[d]) * double(x[d]);
    xq += double(q[d]) * double(x[d]);
  }
}
#endif

}  // namespace

// The generic forms: lane i of the partial sums takes elements i, i + 16, ...; the tail
// past the last multiple of 16 is added after the lanes are summed.
template <typename Acc, typename T>
Acc dot(const T* a, const T* b, int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<Acc, float> && std::is_same_v<T, float>) return dot_f32(a, b, n);
#endif
  Acc s[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) s[i] += Acc(a[d + i]) * Acc(b[d + i]);
  Acc acc = 0;
  for (int64_t i = 0; i < kLanes; ++i) acc += s[i];
  for (; d < n; ++d) acc += Acc(a[d]) * Acc(b[d]);
  return acc;
}

template <typename Acc, typename T>
void two_dots(const T* x, const T* p, const T* q, int64_t n, Acc& xp, Acc& xq) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if constexpr (std::is_same_v<Acc, float>) return two_dots_f32(x, p, q, n, xp, xq);
    if constexpr (std::is_same_v<Acc, double>) return two_dots_f32_in_f64(x, p, q, n, xp, xq);
  }
#endif
  Acc sp[kLanes] = {}, sq[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) {
      sp[i] += Acc(p[d + i]) * Acc(x[d + i]);
      sq[i] += Acc(q[d + i]) * Acc(x[d + i]);
    }
  xp = 0;
  xq = 0;
  for (int64_t i = 0; i < kLanes; ++i) {
    xp += sp[i];
    xq += sq[i];
  }
  for (; d < n; ++d) {
    xp += Acc(p[d]) * Acc(x[d]);
    xq += Acc(q[d]) * Acc(x[d]);
  }
}

template float dot<float, float>(const float*, const float*, int64_t);
template double dot<double, float>(const float*, const float*, int64_t);
template double dot<double, double>(const double*, const double*, int64_t);
template void two_dots<float, float>(const float*, const float*, const float*, int64_t, float&, float&);
template void two_dots<double, float>(const float*, const float*, const float*, int64_t, double&, double&);
template void two_dots<double, double>(const double*, const double*, const double*, int64_t, double&, double&);

}  // namespace moepp
