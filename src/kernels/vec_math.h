// Helpers for kernels that work on 16 floats at a time (AVX-512): the lane mask of a
// ragged tail, and elementwise math for the kernels whose time goes to exp (SwiGLU's
// sigmoid over every FFN row: scalar std::exp costs ~20 cycles an element, as much as 4%
// of an FFN expert's forward; exp16 costs about one).
//
// exp16: exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 (|r| <= ln2 / 2,
// ln 2 split in two so r is exact to ~1 ulp), e^r by its degree-6 Taylor polynomial
// (truncation < 2e-7 relative), and 2^n applied with scalef. x is clamped to
// [-87.3, 88.7], where exp stays a normal finite float, so sigmoid's limits come out as
// 0 and 1 to within 1e-38 instead of through inf.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace moepp {

// Halves, widening and horizontal sums written with the compiler's generic vector
// builtins: GCC 12's own _mm512_castps512_ps256, _mm512_extractf64x4_pd, _mm512_cvtps_pd
// and _mm512_reduce_add_* fill an "undefined" register and warn (-Wuninitialized) wherever
// they are inlined. The code generated is the same (a half is a register rename).
inline __m256 low_half(__m512 v) { return __m256(__builtin_shufflevector(__v16sf(v), __v16sf(v), 0, 1, 2, 3, 4, 5, 6, 7)); }
inline __m256 high_half(__m512 v) {
  return __m256(__builtin_shufflevector(__v16sf(v), __v16sf(v), 8, 9, 10, 11, 12, 13, 14, 15));
}
inline __m256d low_half(__m512d v) { return __m256d(__builtin_shufflevector(__v8df(v), __v8df(v), 0, 1, 2, 3)); }
inline __m256d high_half(__m512d v) { return __m256d(__builtin_shufflevector(__v8df(v), __v8df(v), 4, 5, 6, 7)); }
inline __m512d widen(__m256 v) { return __m512d(__builtin_convertvector(__v8sf(v), __v8df)); }
// 16 int8 values (q8_0) as floats. Through int32, with the zero-masked intrinsics (all
// lanes kept; the unmasked ones warn as above): GCC 12 turns an int8 to float
// __builtin_convertvector into 16 scalar conversions, which made q8_0 decode 8x slower.
inline __m512 widen_i8(__m128i v) {
  return _mm512_maskz_cvtepi32_ps(__mmask16(0xFFFF), _mm512_maskz_cvtepi8_epi32(__mmask16(0xFFFF), v));
}
// v, kept in a register. A vector loaded once and then used by several multiply-adds is
// otherwise loaded again by each of them (GCC folds the load into every vfmadd231ps as a
// memory operand), and the loads, not the multiply-adds, set the pace: attention's tiles
// issued 20 loads per 16 multiply-adds: the scores at ~120 GFLOP/s a thread, half the FMA
// peak, and ~270 with their shared operands kept in registers (the values 100-110 -> 160-205).
inline __m512 in_register(__m512 v) {
  asm("" : "+v"(v));
  return v;
}
inline __m512i in_register(__m512i v) {
  asm("" : "+v"(v));
  return v;
}

// Transposes 16 vectors in place: r[k] lane l becomes r[l] lane k.
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {  // per 128-bit quarter q: rows 2i, 2i + 1 interleaved
    t[2 * i] = _mm512_maskz_unpacklo_ps(0xFFFF, r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_maskz_unpackhi_ps(0xFFFF, r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {  // u[4q + c], quarter k: rows 4q .. 4q + 3 of column 4k + c
    const auto pd = [](__m512 v) { return _mm512_castps_pd(v); };
    r[4 * q + 0] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, pd(t[4 * q]), pd(t[4 * q + 2])));
    r[4 * q + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, pd(t[4 * q]), pd(t[4 * q + 2])));
    r[4 * q + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, pd(t[4 * q + 1]), pd(t[4 * q + 3])));
    r[4 * q + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, pd(t[4 * q + 1]), pd(t[4 * q + 3])));
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {  // column 4k + c gathers quarter k of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512 lo01 = _mm512_maskz_shuffle_f32x4(0xFFFF, r[c], r[4 + c], 0x44);
    const __m512 hi01 = _mm512_maskz_shuffle_f32x4(0xFFFF, r[c], r[4 + c], 0xEE);
    const __m512 lo23 = _mm512_maskz_shuffle_f32x4(0xFFFF, r[8 + c], r[12 + c], 0x44);
    const __m512 hi23 = _mm512_maskz_shuffle_f32x4(0xFFFF, r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_maskz_shuffle_f32x4(0xFFFF, lo01, lo23, 0x88);
    t[4 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, lo01, lo23, 0xDD);
    t[8 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, hi01, hi23, 0x88);
    t[12 + c] = _mm512_maskz_shuffle_f32x4(0xFFFF, hi01, hi23, 0xDD);
  }
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) r[k] = t[k];
}

// 16 bf16 values as floats: the bits in the high half of each 32-bit lane.
inline __m512 widen_bf16(__m256i v) { return __m512(__builtin_convertvector(__v16hu(v), __v16su) << 16); }

// Horizontal sums in exactly the order of GCC's _mm512_reduce_add_ps/_pd (high half + low
// half, then the 128-bit halves, then the pairs), so results are bit-identical.
inline float reduce_add(__m512 v) {
  const __m256 s8 = _mm256_add_ps(high_half(v), low_half(v));
  const __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_add_ps(s4, _mm_shuffle_ps(s4, s4, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtss_f32(s2) + _mm_cvtss_f32(_mm_shuffle_ps(s2, s2, _MM_SHUFFLE(1, 1, 1, 1)));
}

inline float reduce_max(__m512 v) {
  const __m256 s8 = _mm256_max_ps(high_half(v), low_half(v));
  const __m128 s4 = _mm_max_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
  const __m128 s2 = _mm_max_ps(s4, _mm_shuffle_ps(s4, s4, _MM_SHUFFLE(1, 0, 3, 2)));
  return std::max(_mm_cvtss_f32(s2), _mm_cvtss_f32(_mm_shuffle_ps(s2, s2, _MM_SHUFFLE(1, 1, 1, 1))));
}

inline double reduce_add(__m512d v) {
  const __m256d s4 = _mm256_add_pd(high_half(v), low_half(v));
  const __m128d s2 = _mm_add_pd(_mm256_extractf128_pd(s4, 1), _mm256_castpd256_pd128(s4));
  return _mm_cvtsd_f64(s2) + _mm_cvtsd_f64(_mm_unpackhi_pd(s2, s2));
}

// The first min(max(n, 0), 16) lanes.
inline __mmask16 tail_mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// 16 rows of `in` (ld apart; those from `rows` on read as zero), the lanes `cols` keeps,
// transposed: r[c] holds lane c of each row.
inline void load_transposed16(const float* in, int64_t ld, int64_t rows, __mmask16 cols, __m512 (&r)[16]) {
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(cols, in + i * ld) : _mm512_setzero_ps();
  transpose16(r);
}

// The zero-masking forms with every lane kept compute the same as the plain intrinsics;
// GCC 12's plain min/max/roundscale/scalef fill an "undefined" register and warn.
inline __m512 exp16(__m512 x) {
  constexpr __mmask16 all = 0xFFFF;
  x = _mm512_maskz_min_ps(all, _mm512_maskz_max_ps(all, x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_maskz_roundscale_ps(all, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln 2, high part (exact in n * hi)
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);       // ln 2 - high part
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(all, p, n);
}

// 1 / (1 + exp(-x))
inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

// SwiGLU's silu(a) * b, as swiglu_forward computes it (the int8 tiles of an expert's
// hidden rows compute it again from the up projection: the same bits).
inline __m512 swiglu16(__m512 a, __m512 b) { return _mm512_mul_ps(_mm512_mul_ps(a, sigmoid16(a)), b); }

}  // namespace moepp
#endif
