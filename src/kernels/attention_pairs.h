// bf16 pair products for attention's tiles (AVX-512 BF16): vdpbf16ps multiplies a pair of
// bf16 values in each 32-bit lane by the same lane's pair and adds both products to an f32
// sum, twice f32 FMA's multiply-adds an instruction. Every product here is
//   O[r][c] (+)= sum_p A(r, p) . B[p][c]
// over such pairs p: A's word broadcast, 16 words of B a vector. The helpers lay operands
// out as pairs along the sum (two keys, two dimensions, two queries) and round them to
// nearest even as they do. Used by the training attention kernels
// (kernels/attention_forward_tiles, kernels/attention_bf16).
#pragma once
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/attention_tiles.h"
#include "kernels/vec_math.h"

namespace moepp::bf16_pairs {

// Two bf16 values in one 32-bit word, the first in the low half.
using Pair = uint32_t;

// Lane i: (even[i], odd[i]) rounded to bf16.
inline __m512i interleave_pairs(__m512 even, __m512 odd) {
  // cvtne2ps puts even's 16 values in the low half and odd's in the high one; the
  // permutation takes 16-bit element 2i from i and 2i + 1 from 16 + i.
  alignas(64) static constexpr uint16_t kOrder[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_permutexvar_epi16(_mm512_load_si512(kOrder), __m512i(_mm512_cvtne2ps_pbh(odd, even)));
}

// dst[c] = (a[c], b[c]) for c < width (a multiple of 16), zero past n; b null reads as zero.
inline void pair_rows(const float* a, const float* b, int64_t n, int64_t width, Pair* dst) {
  for (int64_t c0 = 0; c0 < width; c0 += 16) {
    const __mmask16 m = tail_mask16(n - c0);
    const __m512 y = b ? _mm512_maskz_loadu_ps(m, b + c0) : _mm512_setzero_ps();
    _mm512_storeu_si512(dst + c0, interleave_pairs(_mm512_maskz_loadu_ps(m, a + c0), y));
  }
}

// dst[p] = (x[2p], x[2p + 1]) for p < n / 2 (n even): a row rounded as it lies.
inline void round_row_pairs(const float* x, int64_t n, Pair* dst) {
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    const __mmask16 m = tail_mask16(n - c0);
    _mm256_mask_storeu_epi16(reinterpret_cast<__m256i*>(dst) + c0 / 16, m,
                             __m256i(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + c0))));
  }
}

// dst[p][m] = (row(m)[2p], row(m)[2p + 1]) for p < hd / 2, m < Mp (rows from M on zero):
// rows transposed so that 16 of them are a vector.
template <typename RowOf>
inline void pairs_transposed(const RowOf& row, int64_t M, int64_t Mp, int64_t hd, Pair* dst) {
  tiles::for_each_transposed_block(row, M, Mp, hd, 1.0f, [&](int64_t m0, int64_t d0, const __m512 (&r)[16]) {
    for (int64_t l = 0; l < 16 && d0 + l < hd; l += 2)
      _mm512_storeu_si512(dst + (d0 + l) / 2 * Mp + m0, interleave_pairs(r[l], r[l + 1]));
  });
}

// O[r][16 l : 16 l + 16] (+)= sum_{p < pairs} A[r * ar + p * ap] . B[p * bp + 16 l : ...] for
// r < R, l < L: R x L sums in registers, each vector of B feeding R of them.
template <int R, int L, bool Accumulate>
inline void pair_tile(const Pair* A, int64_t ar, int64_t ap, const Pair* B, int64_t bp, int64_t pairs, float* O,
                      int64_t ldo) {
  __m512 acc[R][L];
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < L; ++l) acc[r][l] = Accumulate ? _mm512_loadu_ps(O + r * ldo + 16 * l) : _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i b[L];
    for (int l = 0; l < L; ++l) b[l] = in_register(_mm512_loadu_si512(B + p * bp + 16 * l));
    for (int r = 0; r < R; ++r) {
      const __m512bh a = __m512bh(_mm512_set1_epi32(int(A[r * ar + p * ap])));
      for (int l = 0; l < L; ++l) acc[r][l] = _mm512_dpbf16_ps(acc[r][l], a, __m512bh(b[l]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < L; ++l) _mm512_storeu_ps(O + r * ldo + 16 * l, acc[r][l]);
}

template <int L, bool Accumulate>
inline void pair_rows_of(const Pair* A, int64_t ar, int64_t ap, int64_t rows, const Pair* B, int64_t bp, int64_t pairs,
                         float* O, int64_t ldo) {
  // 12 to 16 sums: a vdpbf16ps waits for its sum's last one, so fewer chains set the pace.
  constexpr int R = L == 1 ? 12 : L == 2 ? 8 : L == 3 ? 5 : 4;
  int64_t r = 0;
  for (; r + R <= rows; r += R) pair_tile<R, L, Accumulate>(A + r * ar, ar, ap, B, bp, pairs, O + r * ldo, ldo);
  for (; r < rows; ++r) pair_tile<1, L, Accumulate>(A + r * ar, ar, ap, B, bp, pairs, O + r * ldo, ldo);
}

// O[r][c] (+)= sum_{p < pairs} A(r, p) . B[p][c] for r < rows, c < width (a multiple of
// 16): A(r, p) = A[r * ar + p * ap], B's pair rows bp words apart, O's rows ldo floats apart.
template <bool Accumulate>
inline void pair_product(const Pair* A, int64_t ar, int64_t ap, int64_t rows, const Pair* B, int64_t bp, int64_t pairs,
                         int64_t width, float* O, int64_t ldo) {
  for (int64_t c0 = 0; c0 < width;) {
    const int64_t L = std::min<int64_t>(4, (width - c0) / 16);
    switch (L) {
      case 1: pair_rows_of<1, Accumulate>(A, ar, ap, rows, B + c0, bp, pairs, O + c0, ldo); break;
      case 2: pair_rows_of<2, Accumulate>(A, ar, ap, rows, B + c0, bp, pairs, O + c0, ldo); break;
      case 3: pair_rows_of<3, Accumulate>(A, ar, ap, rows, B + c0, bp, pairs, O + c0, ldo); break;
      default: pair_rows_of<4, Accumulate>(A, ar, ap, rows, B + c0, bp, pairs, O + c0, ldo); break;
    }
    c0 += 16 * L;
  }
}

}  // namespace moepp::bf16_pairs
#endif
