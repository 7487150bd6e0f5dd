// q4 blocks (kernels/int8_dot.h: 16 bytes, value i + 8 in the low nibble of byte i and
// value i + 16 + 8 in its high nibble) widened to one byte a value in AVX-512 registers:
// what the int8 products (kernels/int8_dot.cpp, kernels/amx_int8.cpp) share.
#pragma once
#include <cstdint>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

namespace moepp {

// 32 q4 bytes (two blocks) as 64 unsigned values (q + 8) in block order: [block 0 values
// 0-15, block 0 values 16-31, block 1 values 0-15, block 1 values 16-31].
inline __m512i unpack_two_q4_blocks(const uint8_t* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), low4 = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(raw, low4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
  // lo is [b0 lo, b1 lo] and hi [b0 hi, b1 hi] in 128-bit halves; one shuffle interleaves
  // them (the generic builtin: GCC 12's _mm512_inserti64x4 and _mm512_shuffle_i64x2 warn).
  return __m512i(__builtin_shufflevector(__v4di(lo), __v4di(hi), 0, 1, 4, 5, 2, 3, 6, 7));
}

// One q4 block as 32 unsigned values in the low half, zeros above.
inline __m512i unpack_one_q4_block(const uint8_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), low4 = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(raw, low4), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
  // (Generic builtins again: GCC 12's _mm512_zextsi256_si512 warns as the inserts do.)
  const __v4di both = __builtin_shufflevector(__v2di(lo), __v2di(hi), 0, 1, 2, 3), zero = {0, 0, 0, 0};
  return __m512i(__builtin_shufflevector(both, zero, 0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace moepp

#endif
