#include "kernels/attention_backward_tiles.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "kernels/attention_tiles.h"

namespace moepp {

#if defined(__AVX512F__)
namespace {

constexpr int64_t kQueries = 16;  // query rows per tile: one vector of the transposed layout

// Out[j][c0 : c0 + 16 L] += sum_{i < 16} St[j][i] B[i][c0 : ...] for j < kb (B [16, width],
// Out rows ldo apart): KJ keys by L vectors of columns in registers (16 sums: with fewer,
// as two keys by two vectors at head width 32, each sum's chain of multiply-adds set the
// pace), so that each row of B loaded feeds KJ of them.
template <int L>
void transposed_outer(const float* St, int64_t kb, const float* B, int64_t width, int64_t c0, float* Out,
                      int64_t ldo) {
  constexpr int KJ = 16 / L > 8 ? 8 : 16 / L;  // L = 1: 8 keys (8 sums); 2: 8; 3: 5; 4: 4
  int64_t j = 0;
  for (; j + KJ <= kb; j += KJ) {
    __m512 acc[KJ][L];
    for (int u = 0; u < KJ; ++u)
      for (int l = 0; l < L; ++l) acc[u][l] = _mm512_loadu_ps(Out + (j + u) * ldo + c0 + 16 * l);
    for (int64_t i = 0; i < kQueries; ++i) {
      __m512 bv[L];
      for (int l = 0; l < L; ++l) bv[l] = in_register(_mm512_loadu_ps(B + i * width + c0 + 16 * l));
      for (int u = 0; u < KJ; ++u) {
        const __m512 p = _mm512_set1_ps(St[(j + u) * kQueries + i]);
        for (int l = 0; l < L; ++l) acc[u][l] = _mm512_fmadd_ps(p, bv[l], acc[u][l]);
      }
    }
    for (int u = 0; u < KJ; ++u)
      for (int l = 0; l < L; ++l) _mm512_storeu_ps(Out + (j + u) * ldo + c0 + 16 * l, acc[u][l]);
  }
  for (; j < kb; ++j)
    for (int l = 0; l < L; ++l) {
      __m512 acc = _mm512_loadu_ps(Out + j * ldo + c0 + 16 * l);
      for (int64_t i = 0; i < kQueries; ++i)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(St[j * kQueries + i]), _mm512_loadu_ps(B + i * width + c0 + 16 * l), acc);
      _mm512_storeu_ps(Out + j * ldo + c0 + 16 * l, acc);
    }
}

// dst[0 : width] = src[0 : n], zero past n (width a multiple of 16): a row staged in a tile.
inline void copy_row_padded(float* dst, const float* src, int64_t n, int64_t width) {
  for (int64_t c0 = 0; c0 < width; c0 += 16)
    _mm512_storeu_ps(dst + c0, _mm512_maskz_loadu_ps(tail_mask16(n - c0), src + c0));
}

void transposed_outer_all(const float* St, int64_t kb, const float* B, int64_t width, float* Out) {
  for (int64_t c0 = 0; c0 < width; c0 += 64) {
    switch (width - c0 >= 64 ? 4 : (width - c0) / 16) {
      case 1: transposed_outer<1>(St, kb, B, width, c0, Out, width); break;
      case 2: transposed_outer<2>(St, kb, B, width, c0, Out, width); break;
      case 3: transposed_outer<3>(St, kb, B, width, c0, Out, width); break;
      default: transposed_outer<4>(St, kb, B, width, c0, Out, width); break;
    }
  }
}

}  // namespace
#endif

void attention_backward_tiles(const float* q, const float* k, const float* v, const float* stats, const float* dout,
                              float* dq, float* dk, float* dv, const AttentionShape& s, int64_t b, int64_t kvh) {
  MOEPP_CHECK(attention_in_tiles(), "attention_backward_tiles: this build has no AVX-512");
#if defined(__AVX512F__)
  const int64_t T = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim;
  const int64_t G = Hq / Hkv, width = (hd + 15) / 16 * 16, ks = Hkv * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  // Scratch: the kv head's keys, and its key and value gradients, as rows `width` long
  // (zero past hd); per tile of 16 queries their Q (times scale) and dO transposed
  // [hd, 16], dO, Q and dQ as rows [16, width], and P and dP (then dS) transposed [T, 16].
  thread_local AlignedVector<float> scratch;
  float *Kw, *dKw, *dVw, *Qt, *dOt, *dOb, *Qb, *dQb, *Pt, *dSt;
  tiles::carve_scratch(scratch, {{&Kw, T * width}, {&dKw, T * width}, {&dVw, T * width}, {&Qt, hd * kQueries},
                                 {&dOt, hd * kQueries}, {&dOb, kQueries * width}, {&Qb, kQueries * width},
                                 {&dQb, kQueries * width}, {&Pt, T * kQueries}, {&dSt, T * kQueries}});
  std::fill(dKw, dKw + T * width, 0.0f);  // dKw and dVw: sums
  std::fill(dVw, dVw + T * width, 0.0f);
  const float* K = k + (b * T * Hkv + kvh) * hd;  // row j at K + j * ks
  const float* V = v + (b * T * Hkv + kvh) * hd;
  for (int64_t j = 0; j < T; ++j) copy_row_padded(Kw + j * width, K + j * ks, hd, width);
  const int64_t qs = Hq * hd;  // a head's rows of q and dout lie qs apart
  for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) {
    const float* row_max = softmax_max(stats, b, h, s);
    const float* row_inverse = softmax_inverse(stats, b, h, s);
    for (int64_t i0 = 0; i0 < T; i0 += kQueries) {
      const int64_t n = std::min(kQueries, T - i0), keys = std::min(T, i0 + kQueries);
      // This tile's rows (zero past the sequence's end: they add nothing).
      const float* dO = dout + ((b * T + i0) * Hq + h) * hd;
      const float* Q = q + ((b * T + i0) * Hq + h) * hd;
      for (int64_t i = 0; i < kQueries; ++i) {
        if (i < n) {
          copy_row_padded(dOb + i * width, dO + i * qs, hd, width);
          copy_row_padded(Qb + i * width, Q + i * qs, hd, width);
        } else {
          std::fill(dOb + i * width, dOb + (i + 1) * width, 0.0f);
          std::fill(Qb + i * width, Qb + (i + 1) * width, 0.0f);
        }
      }
      tiles::transpose_rows(dOb, width, kQueries, hd, dOt);
      // dP[i][j] = dO_i . V_j, held transposed.
      tiles::transposed_scores<1>(dOt, hd, V, ks, keys, dSt);
      tiles::transposed_queries([&](int64_t i) { return Q + i * qs; }, n, kQueries, hd, scale, Qt);
      tiles::softmax_probs_transposed(Qt, hd, K, ks, keys, i0, n, row_max + i0, row_inverse + i0, Pt);
      // dS = P * (dP - sum_j P dP) * scale, 16 queries a vector.
      __m512 rowdot = _mm512_setzero_ps();
      for (int64_t j = 0; j < keys; ++j)
        rowdot = _mm512_fmadd_ps(_mm512_loadu_ps(Pt + j * kQueries), _mm512_loadu_ps(dSt + j * kQueries), rowdot);
      const __m512 s = _mm512_set1_ps(scale);
      for (int64_t j = 0; j < keys; ++j) {
        const __m512 ds = _mm512_mul_ps(_mm512_loadu_ps(Pt + j * kQueries),
                                        _mm512_sub_ps(_mm512_loadu_ps(dSt + j * kQueries), rowdot));
        _mm512_storeu_ps(dSt + j * kQueries, _mm512_mul_ps(ds, s));
      }
      // dQ = dS K;  dK += dS^T Q;  dV += P^T dO.
      std::fill(dQb, dQb + kQueries * width, 0.0f);
      tiles::transposed_values_all(dSt, kQueries, keys, Kw, width, dQb, width);
      float* dQ = dq + ((b * T + i0) * Hq + h) * hd;
      for (int64_t i = 0; i < n; ++i) tiles::add_row(dQ + i * qs, dQb + i * width, hd);
      transposed_outer_all(dSt, keys, Qb, width, dKw);
      transposed_outer_all(Pt, keys, dOb, width, dVw);
    }
  }
  for (int64_t j = 0; j < T; ++j) {
    tiles::add_row(dk + ((b * T + j) * Hkv + kvh) * hd, dKw + j * width, hd);
    tiles::add_row(dv + ((b * T + j) * Hkv + kvh) * hd, dVw + j * width, hd);
  }
#else
  (void)q, (void)k, (void)v, (void)stats, (void)dout, (void)dq, (void)dk, (void)dv, (void)s, (void)b, (void)kvh;
#endif
}

}  // namespace moepp
