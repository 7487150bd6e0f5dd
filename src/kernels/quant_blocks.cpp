#include "kernels/quant_blocks.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {
constexpr int kBlock = 32, kHalf = 16;
#if defined(__AVX512F__)
constexpr __mmask16 kAll = 0xFFFF;
// Nearest integer (ties to even, the default rounding mode) of v * s, as int32 lanes.
inline __m512i rounded(__m512 v, __m512 s) { return _mm512_maskz_cvtps_epi32(kAll, _mm512_mul_ps(v, s)); }
#endif

// A block's scale as stored: f32, or the f16 value next to d away from zero, so that no
// weight's w / d exceeds the code range (rounded to nearest, a small d in f16's subnormal
// range could come out several percent low and clip the block's largest weights). Beyond
// f16's range the result is inf, and the packer rejects the matrix.
float as_scale(float d, bool f16) {
  if (!f16) return d;
  uint16_t h = f32_to_f16(d);
  if (std::fabs(f16_to_f32_fast(h)) < std::fabs(d)) ++h;  // the next magnitude up (sign-magnitude bits)
  return f16_to_f32_fast(h);
}
}  // namespace

float encode_q8_0_block(const float* w, int8_t* q, bool f16_scale) {
#if defined(__AVX512F__)
  const __m512 v0 = _mm512_loadu_ps(w), v1 = _mm512_loadu_ps(w + kHalf);
  const float amax = reduce_max(_mm512_maskz_max_ps(kAll, _mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  const float d = as_scale(amax / 127.0f, f16_scale), inv = d > 0 ? 1.0f / d : 0.0f;
  const __m512 s = _mm512_set1_ps(inv);  // |w * inv| <= 127 (+ rounding): saturation never bites
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_maskz_cvtsepi32_epi8(kAll, rounded(v0, s)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + kHalf), _mm512_maskz_cvtsepi32_epi8(kAll, rounded(v1, s)));
#else
  float amax = 0;
  for (int i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(w[i]));
  const float d = as_scale(amax / 127.0f, f16_scale), inv = d > 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kBlock; ++i) q[i] = int8_t(std::clamp(std::nearbyint(w[i] * inv), -127.0f, 127.0f));
#endif
  return d;
}

float encode_q4_block(const float* w, uint8_t* bytes) {
#if defined(__AVX512F__)
  const __m512 v0 = _mm512_loadu_ps(w), v1 = _mm512_loadu_ps(w + kHalf);
  const float amax = reduce_max(_mm512_maskz_max_ps(kAll, _mm512_abs_ps(v0), _mm512_abs_ps(v1)));
  // The first weight whose magnitude is amax.
  const __m512 m = _mm512_set1_ps(amax);
  const uint32_t at = uint32_t(_mm512_cmp_ps_mask(_mm512_abs_ps(v0), m, _CMP_EQ_OQ)) |
                      uint32_t(_mm512_cmp_ps_mask(_mm512_abs_ps(v1), m, _CMP_EQ_OQ)) << 16;
  const float peak = at ? w[__builtin_ctz(at)] : 0.0f;
  const float d = as_scale(peak / -8.0f, true), inv = d != 0 ? 1.0f / d : 0.0f;
  const __m512 s = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-8), hi = _mm512_set1_epi32(7), eight = _mm512_set1_epi32(8);
  const auto code = [&](__m512 v) {
    return _mm512_add_epi32(_mm512_maskz_min_epi32(kAll, _mm512_maskz_max_epi32(kAll, rounded(v, s), lo), hi), eight);
  };
  const __m512i packed = _mm512_or_si512(code(v0), _mm512_maskz_slli_epi32(kAll, code(v1), 4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes), _mm512_maskz_cvtepi32_epi8(kAll, packed));
#else
  float peak = 0;
  for (int i = 0; i < kBlock; ++i)
    if (std::fabs(w[i]) > std::fabs(peak)) peak = w[i];
  const float d = as_scale(peak / -8.0f, true), inv = d != 0 ? 1.0f / d : 0.0f;
  const auto code = [&](int i) { return int(std::clamp(std::nearbyint(w[i] * inv), -8.0f, 7.0f)) + 8; };
  for (int i = 0; i < kHalf; ++i) bytes[i] = uint8_t(code(i) | code(i + kHalf) << 4);
#endif
  return d;
}

void decode_q8_0_block(const int8_t* q, float d, float* out) {
#if defined(__AVX512F__)
  const __m512 scale = _mm512_set1_ps(d);
  _mm512_storeu_ps(out, _mm512_mul_ps(scale, widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)))));
  _mm512_storeu_ps(out + kHalf,
                   _mm512_mul_ps(scale, widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + kHalf)))));
#else
  for (int i = 0; i < kBlock; ++i) out[i] = d * float(q[i]);
#endif
}

void decode_q4_block(const uint8_t* bytes, float d, float* out) {
#if defined(__AVX512F__)
  // Codes minus 8 as int8, then widened as q8_0's values are (the same d * q in f32).
  __m128i lo, hi;
  q4_block_values(bytes, lo, hi);
  const __m512 scale = _mm512_set1_ps(d);
  _mm512_storeu_ps(out, _mm512_mul_ps(scale, widen_i8(lo)));
  _mm512_storeu_ps(out + kHalf, _mm512_mul_ps(scale, widen_i8(hi)));
#else
  for (int i = 0; i < kHalf; ++i) {
    out[i] = d * float((bytes[i] & 0x0F) - 8);
    out[i + kHalf] = d * float((bytes[i] >> 4) - 8);
  }
#endif
}

}  // namespace moepp
