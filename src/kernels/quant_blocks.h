// One block of 32 weights encoded as q8_0 or q4 and decoded back (kernels/quant.h has the
// formats). Packing, unpacking and the bf16 widening of PackedMatrix go through these, so
// each format's arithmetic is written once: AVX-512 where the CPU has it, plain C++
// otherwise, with the same results (rounding to nearest even in both).
#pragma once
#include <cstdint>

namespace moepp {

// q8_0: d = max|w| / 127, q = clamp(round(w / d), -127, 127); writes 32 int8 values,
// returns d. With f16_scale (weights, whose scales are stored as f16) d is first rounded up
// in magnitude to an f16 value and q computed with it, so d * q is what the stored block means.
float encode_q8_0_block(const float* w, int8_t* q, bool f16_scale = false);
// q4: d = -(the weight of largest magnitude, the first if two tie) / 8, rounded up in
// magnitude to an f16 value,
// q = clamp(round(w / d), -8, 7); writes 16 bytes (value i + 8 in the low nibble of byte
// i, value i + 16 + 8 in its high nibble), returns d (a value f16 holds exactly).
float encode_q4_block(const float* w, uint8_t* bytes);

// out[i] = d * q[i] for the block's 32 values.
void decode_q8_0_block(const int8_t* q, float d, float* out);
void decode_q4_block(const uint8_t* bytes, float d, float* out);

}  // namespace moepp

#if defined(__AVX512F__)
#include <immintrin.h>

namespace moepp {

// A q4 block's 32 values q (codes minus 8) as int8: values 0-15 in lo, 16-31 in hi.
inline void q4_block_values(const uint8_t* bytes, __m128i& lo, __m128i& hi) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m128i low4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  lo = _mm_sub_epi8(_mm_and_si128(raw, low4), eight);
  hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), low4), eight);
}

}  // namespace moepp
#endif
