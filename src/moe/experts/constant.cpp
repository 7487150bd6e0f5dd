#include "moe/experts/constant.h"

#include <algorithm>
#include <cmath>

#include "kernels/vec_math.h"

namespace moepp {

namespace {

// (x . p, x . q) accumulated in Acc, 16 partial sums each: independent chains instead of
// one serial chain of D additions (~6k cycles per slot at D = 1536), and 16 partial sums
// round no worse than one. The f32 case is written out below.
template <typename Acc, typename T>
void two_dots(const T* x, const T* p, const T* q, int64_t D, Acc& xp, Acc& xq) {
  constexpr int64_t L = 16;
  Acc sp[L] = {}, sq[L] = {};
  int64_t d = 0;
  for (; d + L <= D; d += L)
    for (int64_t i = 0; i < L; ++i) {
      sp[i] += Acc(p[d + i]) * Acc(x[d + i]);
      sq[i] += Acc(q[d + i]) * Acc(x[d + i]);
    }
  xp = 0;
  xq = 0;
  for (int64_t i = 0; i < L; ++i) {
    xp += sp[i];
    xq += sq[i];
  }
  for (; d < D; ++d) {
    xp += Acc(p[d]) * Acc(x[d]);
    xq += Acc(q[d]) * Acc(x[d]);
  }
}

#if defined(__AVX512F__)
// The f32 forward's case: 16-lane FMAs into one register accumulator each (GCC keeps the
// generic loop's partial sums in memory).
template <>
void two_dots<float, float>(const float* x, const float* p, const float* q, int64_t D, float& xp, float& xq) {
  __m512 sp = _mm512_setzero_ps(), sq = _mm512_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    const __m512 xv = _mm512_loadu_ps(x + d);
    sp = _mm512_fmadd_ps(_mm512_loadu_ps(p + d), xv, sp);
    sq = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), xv, sq);
  }
  if (d < D) {
    const __mmask16 m = tail_mask16(D - d);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + d);
    sp = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + d), xv, sp);
    sq = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), xv, sq);
  }
  xp = _mm512_reduce_add_ps(sp);
  xq = _mm512_reduce_add_ps(sq);
}

// Floats 0-7 and 8-15 of a vector, widened to double.
__m512d widen_lo(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
__m512d widen_hi(__m512 v) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }

// The f32 backward's case, accumulated in double: the same 16 partial sums per dot as the
// generic loop (lanes 0-7 and 8-15 of each 16 floats), held in registers. The generic
// loop kept them in memory, and the constant experts' backward took 5-6 ms of a z 0.8
// layer's backward.
template <>
void two_dots<double, float>(const float* x, const float* p, const float* q, int64_t D, double& xp, double& xq) {
  __m512d sp_lo = _mm512_setzero_pd(), sp_hi = _mm512_setzero_pd();
  __m512d sq_lo = _mm512_setzero_pd(), sq_hi = _mm512_setzero_pd();
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    const __m512 xv = _mm512_loadu_ps(x + d), pv = _mm512_loadu_ps(p + d), qv = _mm512_loadu_ps(q + d);
    const __m512d x_lo = widen_lo(xv), x_hi = widen_hi(xv);
    sp_lo = _mm512_fmadd_pd(widen_lo(pv), x_lo, sp_lo);
    sp_hi = _mm512_fmadd_pd(widen_hi(pv), x_hi, sp_hi);
    sq_lo = _mm512_fmadd_pd(widen_lo(qv), x_lo, sq_lo);
    sq_hi = _mm512_fmadd_pd(widen_hi(qv), x_hi, sq_hi);
  }
  xp = _mm512_reduce_add_pd(_mm512_add_pd(sp_lo, sp_hi));
  xq = _mm512_reduce_add_pd(_mm512_add_pd(sq_lo, sq_hi));
  for (; d < D; ++d) {
    xp += double(p[d]) * double(x[d]);
    xq += double(q[d]) * double(x[d]);
  }
}
#endif

}  // namespace

template <typename T>
void constant_forward(const T* x, const T* v, const T* wc, int64_t D, T* a, T* out) {
  T l0 = 0, l1 = 0;
  two_dots(x, wc, wc + D, D, l0, l1);
  const T mx = std::max(l0, l1);
  const T e0 = std::exp(l0 - mx), e1 = std::exp(l1 - mx);
  a[0] = e0 / (e0 + e1);
  a[1] = e1 / (e0 + e1);
  if (out)
    for (int64_t d = 0; d < D; ++d) out[d] = a[0] * x[d] + a[1] * v[d];
}

template <typename T>
void constant_backward(const T* x, const T* v, const T* wc, const T* a, const T* dout,
                       int64_t D, T* dx, T* dv, T* dwc) {
  // The mixer's gradient is a difference of two dot products that often nearly cancel:
  // accumulate them in double, and use the two-way softmax's closed form
  // dl0 = -dl1 = a0 a1 (da0 - da1) rather than subtracting a weighted mean.
  double da0 = 0, da1 = 0;
  two_dots(dout, x, v, D, da0, da1);
  const T dl0 = T(double(a[0]) * double(a[1]) * (da0 - da1)), dl1 = -dl0;
  for (int64_t d = 0; d < D; ++d) {
    dx[d] += a[0] * dout[d] + dl0 * wc[d] + dl1 * wc[D + d];
    dv[d] += a[1] * dout[d];
    dwc[d] += dl0 * x[d];
    dwc[D + d] += dl1 * x[d];
  }
}

template void constant_forward<float>(const float*, const float*, const float*, int64_t, float*, float*);
template void constant_forward<double>(const double*, const double*, const double*, int64_t, double*, double*);
template void constant_backward<float>(const float*, const float*, const float*, const float*, const float*, int64_t, float*, float*, float*);
template void constant_backward<double>(const double*, const double*, const double*, const double*, const double*, int64_t, double*, double*, double*);

}  // namespace moepp
