// The two register-blocked kernels of attention in tiles (AVX-512 f32), shared by the
// prefill runs (kernels/attention_runs.cpp), the training forward (kernels/attention_forward_tiles)
// and the training backward (kernels/attention_backward_tiles, kernels/attention_bf16).
// Scores are held transposed, St[key][query], 16 queries to a vector (Mp = 16 * MV
// columns): an element of a key row is broadcast against 16 queries, so keys are read as
// stored.
#pragma once

namespace moepp {
// Whether this build has the tiles (AVX-512): training attention's forward and backward
// run in them; elsewhere row by row (kernels/attention.cpp).
inline bool attention_in_tiles() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}
}  // namespace moepp

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "core/aligned_vector.h"
#include "kernels/vec_math.h"

namespace moepp::tiles {

// Sizes `scratch` to the pieces' total and points each piece at its part, in order: one
// place sums and hands out, so the two cannot disagree. Each piece starts on a cache line
// (its size rounded up to 16 elements of 4 bytes), so its rows' 64-byte loads do not
// straddle two.
template <typename E>
inline void carve_scratch(AlignedVector<E>& scratch, std::initializer_list<std::pair<E**, int64_t>> pieces) {
  static_assert(sizeof(E) == 4);
  const auto rounded = [](int64_t n) { return (n + 15) / 16 * 16; };
  int64_t total = 0;
  for (const auto& piece : pieces) total += rounded(piece.second);
  scratch.resize(size_t(total));
  E* next = scratch.data();
  for (const auto& [where, n] : pieces) *where = std::exchange(next, next + rounded(n));
}

// dst[0 : n] += src[0 : n].
inline void add_row(float* dst, const float* src, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    const __mmask16 m = tail_mask16(n - c0);
    _mm512_mask_storeu_ps(dst + c0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + c0), _mm512_maskz_loadu_ps(m, src + c0)));
  }
}

// Out[c][0 : 16] = In[i][c] for c < cols, i < 16 (In's rows ld apart, rows past `rows`
// read as zero): 16 rows transposed 16 columns at a time in registers.
inline void transpose_rows(const float* In, int64_t ld, int64_t rows, int64_t cols, float* Out) {
  for (int64_t c0 = 0; c0 < cols; c0 += 16) {
    __m512 r[16];
    load_transposed16(In + c0, ld, rows, tail_mask16(cols - c0), r);
    for (int64_t c = 0; c < 16 && c0 + c < cols; ++c) _mm512_storeu_ps(Out + (c0 + c) * 16, r[c]);
  }
}

// fn(m0, d0, r) for each block of 16 rows (m0 = 0, 16, .. < Mp) by 16 dimensions (d0 = 0,
// 16, .. < hd): r[l] holds dimension d0 + l of rows m0 .. m0 + 15, times scale (rows from
// M on, and dimensions past hd, zero). The rows are transposed in registers, where one
// strided float a value had been (prompt attention 1.03-1.04x at 512 positions).
template <typename RowOf, typename Fn>
inline void for_each_transposed_block(const RowOf& row, int64_t M, int64_t Mp, int64_t hd, float scale, const Fn& fn) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t m0 = 0; m0 < Mp; m0 += 16)
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
      const __mmask16 dims = tail_mask16(hd - d0);
      __m512 r[16];
#pragma GCC unroll 16
      for (int u = 0; u < 16; ++u)
        r[u] = m0 + u < M ? _mm512_mul_ps(_mm512_maskz_loadu_ps(dims, row(m0 + u) + d0), s) : _mm512_setzero_ps();
      transpose16(r);
      fn(m0, d0, r);
    }
}

// Qt[d][m] = row(m)[d] * scale, [hd, Mp] (rows from M on zero): queries as vectors.
template <typename RowOf>
inline void transposed_queries(const RowOf& row, int64_t M, int64_t Mp, int64_t hd, float scale, float* Qt) {
  for_each_transposed_block(row, M, Mp, hd, scale, [&](int64_t m0, int64_t d0, const __m512 (&r)[16]) {
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l)
      if (d0 + l < hd) _mm512_storeu_ps(Qt + (d0 + l) * Mp + m0, r[l]);
  });
}

// St[j][:] = K[j] . Qt for j < kb: KJ keys by MV query vectors in registers.
template <int MV>
inline void transposed_scores(const float* Qt, int64_t hd, const float* K, int64_t ldk, int64_t kb, float* St) {
  constexpr int KJ = MV >= 3 ? 4 : 8;
  constexpr int64_t Mp = 16 * MV;
  int64_t j = 0;
  for (; j + KJ <= kb; j += KJ) {
    __m512 acc[KJ][MV];
    for (int u = 0; u < KJ; ++u)
      for (int c = 0; c < MV; ++c) acc[u][c] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
      __m512 qv[MV];
      for (int c = 0; c < MV; ++c) qv[c] = in_register(_mm512_loadu_ps(Qt + d * Mp + 16 * c));
      for (int u = 0; u < KJ; ++u) {
        const __m512 kd = _mm512_set1_ps(K[(j + u) * ldk + d]);
        for (int c = 0; c < MV; ++c) acc[u][c] = _mm512_fmadd_ps(kd, qv[c], acc[u][c]);
      }
    }
    for (int u = 0; u < KJ; ++u)
      for (int c = 0; c < MV; ++c) _mm512_storeu_ps(St + (j + u) * Mp + 16 * c, acc[u][c]);
  }
  for (; j < kb; ++j) {
    __m512 acc[MV];
    for (int c = 0; c < MV; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; ++d) {
      const __m512 kd = _mm512_set1_ps(K[j * ldk + d]);
      for (int c = 0; c < MV; ++c) acc[c] = _mm512_fmadd_ps(kd, _mm512_loadu_ps(Qt + d * Mp + 16 * c), acc[c]);
    }
    for (int c = 0; c < MV; ++c) _mm512_storeu_ps(St + j * Mp + 16 * c, acc[c]);
  }
}

// transposed_scores for Mp = 16 MV queries, MV from 1 to 4.
inline void transposed_scores_of(int64_t Mp, const float* Qt, int64_t hd, const float* K, int64_t ldk, int64_t kb,
                                 float* St) {
  switch (Mp / 16) {
    case 1: return transposed_scores<1>(Qt, hd, K, ldk, kb, St);
    case 2: return transposed_scores<2>(Qt, hd, K, ldk, kb, St);
    case 3: return transposed_scores<3>(Qt, hd, K, ldk, kb, St);
    default: return transposed_scores<4>(Qt, hd, K, ldk, kb, St);
  }
}

// Pt[j][l] (keys j < keys, l < 16) = the probability of query i0 + l of a backward tile
// (its first n lanes real) on key j, recomputed as the training forward
// (kernels/attention_forward_tiles) took it, bit for bit: the same scores (Qt: the tile's
// queries times scale, transposed [hd, 16], against K's rows ldk apart, each a chain of
// multiply-adds over d in order), exp(s - max) where key j <= i0 + l, times the inverse
// sum; zero past the diagonal and in lanes from n on. row_max and row_inverse: the lanes'
// softmax stats (kernels/attention.h).
inline void softmax_probs_transposed(const float* Qt, int64_t hd, const float* K, int64_t ldk, int64_t keys, int64_t i0,
                                     int64_t n, const float* row_max, const float* row_inverse, float* Pt) {
  transposed_scores<1>(Qt, hd, K, ldk, keys, Pt);
  const __mmask16 real = tail_mask16(n);
  const __m512 mx = _mm512_maskz_loadu_ps(real, row_max), inverse = _mm512_maskz_loadu_ps(real, row_inverse);
  const __m512i last_key = _mm512_add_epi32(_mm512_set1_epi32(int32_t(i0)),
                                            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
  for (int64_t j = 0; j < keys; ++j) {
    const __mmask16 visible = real & _mm512_cmpge_epi32_mask(last_key, _mm512_set1_epi32(int32_t(j)));
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(Pt + j * 16), mx));
    _mm512_storeu_ps(Pt + j * 16, _mm512_maskz_mul_ps(visible, e, inverse));
  }
}

// O[m][c0 : c0 + 16 L] += sum_{j < kb} St[j][m] V[j][c0 : ...] for all Mp rows of O (Mp a
// multiple of U): U queries by L vectors of columns in registers.
template <int U, int L>
inline void transposed_values(const float* St, int64_t Mp, int64_t kb, const float* V, int64_t ldv, int64_t c0, float* O,
                              int64_t width) {
  for (int64_t m = 0; m < Mp; m += U) {
    __m512 acc[U][L];
    for (int u = 0; u < U; ++u)
      for (int l = 0; l < L; ++l) acc[u][l] = _mm512_loadu_ps(O + (m + u) * width + c0 + 16 * l);
    for (int64_t j = 0; j < kb; ++j) {
      __m512 vv[L];
      for (int l = 0; l < L; ++l) vv[l] = in_register(_mm512_loadu_ps(V + j * ldv + c0 + 16 * l));
      for (int u = 0; u < U; ++u) {
        const __m512 p = _mm512_set1_ps(St[j * Mp + m + u]);
        for (int l = 0; l < L; ++l) acc[u][l] = _mm512_fmadd_ps(p, vv[l], acc[u][l]);
      }
    }
    for (int u = 0; u < U; ++u)
      for (int l = 0; l < L; ++l) _mm512_storeu_ps(O + (m + u) * width + c0 + 16 * l, acc[u][l]);
  }
}

// O[m][:] += sum_{j < kb} St[j][m] V[j][:] for all Mp rows of O ([Mp, width], width and Mp
// multiples of 16), 32 columns by 8 queries at a time: 16 sums in registers, each value
// vector feeding 8 of them (4 queries by 64 columns ran at 218-264 GFLOP/s a thread by head
// width, in cache; this 264-274).
inline void transposed_values_all(const float* St, int64_t Mp, int64_t kb, const float* V, int64_t ldv, float* O,
                                  int64_t width) {
  int64_t c0 = 0;
  for (; c0 + 32 <= width; c0 += 32) transposed_values<8, 2>(St, Mp, kb, V, ldv, c0, O, width);
  if (c0 < width) transposed_values<16, 1>(St, Mp, kb, V, ldv, c0, O, width);
}

}  // namespace moepp::tiles
#endif
