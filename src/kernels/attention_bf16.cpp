#include "kernels/attention_bf16.h"

#include <algorithm>
#include <cmath>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/attention_pairs.h"
#include "kernels/attention_tiles.h"
#include "kernels/mixed_precision.h"
#include "kernels/vec_math.h"

namespace moepp {

bool attention_bf16_available(int64_t head_dim) {
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
  return head_dim > 0 && head_dim % 2 == 0;
#else
  (void)head_dim;
  return false;
#endif
}

bool attention_products_bf16(int64_t head_dim) {
  return gemm_precision() == GemmPrecision::bf16 && attention_bf16_available(head_dim);
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
using namespace bf16_pairs;

void attention_backward_bf16(const float* q, const float* k, const float* v, const float* stats, const float* dout,
                             float* dq, float* dk, float* dv, const AttentionShape& s) {
  MOEPP_CHECK(attention_bf16_available(s.head_dim), "attention_backward_bf16: head_dim ", s.head_dim,
              " (needs AVX-512 BF16 and an even head_dim)");
  const int64_t T = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim, G = Hq / Hkv;
  const int64_t hp = hd / 2, width = (hd + 15) / 16 * 16, T2 = (T + 1) / 2, ks = Hkv * hd, qs = Hq * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  constexpr int64_t kQueries = 16;  // a tile's queries: one vector
  // One task per (sequence, kv head): the G query heads of the group write the same dk, dv rows.
  parallel_for(s.batch * Hkv, [&](int64_t bk) {
    const int64_t b = bk / Hkv, kvh = bk % Hkv;
    // Per task: K as pairs of consecutive positions (for dQ = dS K) and V's rows rounded
    // (for dP = dO V^T); key and value gradients as rows `width` long. Per tile: dO
    // transposed as pairs of dimensions, Q and dO as pairs of consecutive queries (for
    // dK += dS^T Q, dV += P^T dO); P and dP (then dS) transposed [keys, 16] in f32, then
    // rounded as they lie (P, dS for dK and dV) and as pairs of keys (dS for dQ). P is
    // recomputed in f32 from Q (times scale, transposed [hd, 16]) and K, as the forward
    // took it (tiles::softmax_probs_transposed).
    thread_local AlignedVector<Pair> pair_scratch;
    thread_local AlignedVector<float> float_scratch;
    Pair *Kp, *Vr, *dOt, *Qp, *dOp, *Pr, *dSr, *dSp;
    float *dKw, *dVw, *dQb, *Qt, *Pt, *dSt;
    tiles::carve_scratch(pair_scratch, {{&Kp, T2 * width},
                                        {&Vr, T * hp},
                                        {&dOt, hp * kQueries},
                                        {&Qp, kQueries / 2 * width},
                                        {&dOp, kQueries / 2 * width},
                                        {&Pr, T * kQueries / 2},
                                        {&dSr, T * kQueries / 2},
                                        {&dSp, T2 * kQueries}});
    tiles::carve_scratch(float_scratch,
                         {{&dKw, T * width}, {&dVw, T * width}, {&dQb, kQueries * width}, {&Qt, hd * kQueries},
                          {&Pt, T * kQueries}, {&dSt, T * kQueries}});
    std::fill(dKw, dKw + T * width, 0.0f);  // dKw and dVw: sums
    std::fill(dVw, dVw + T * width, 0.0f);
    const float* K = k + (b * T * Hkv + kvh) * hd;  // row j at K + j * ks
    const float* V = v + (b * T * Hkv + kvh) * hd;
    for (int64_t jp = 0; jp < T2; ++jp)
      pair_rows(K + 2 * jp * ks, 2 * jp + 1 < T ? K + (2 * jp + 1) * ks : nullptr, hd, width, Kp + jp * width);
    for (int64_t j = 0; j < T; ++j) round_row_pairs(V + j * ks, hd, Vr + j * hp);
    for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) {
      const float* row_max = softmax_max(stats, b, h, s);
      const float* row_inverse = softmax_inverse(stats, b, h, s);
      for (int64_t i0 = 0; i0 < T; i0 += kQueries) {
        const int64_t n = std::min(kQueries, T - i0), keys = std::min(T, i0 + kQueries), keys2 = (keys + 1) / 2;
        const float* dO = dout + ((b * T + i0) * Hq + h) * hd;  // query i's row at + i qs
        const float* Q = q + ((b * T + i0) * Hq + h) * hd;
        const auto row = [&](const float* x, int64_t i) { return i < n ? x + i * qs : nullptr; };
        pairs_transposed([&](int64_t i) { return dO + i * qs; }, n, kQueries, hd, dOt);
        for (int64_t ip = 0; ip < kQueries / 2; ++ip) {
          if (2 * ip < n) {
            pair_rows(Q + 2 * ip * qs, row(Q, 2 * ip + 1), hd, width, Qp + ip * width);
            pair_rows(dO + 2 * ip * qs, row(dO, 2 * ip + 1), hd, width, dOp + ip * width);
          } else {
            std::fill(Qp + ip * width, Qp + (ip + 1) * width, Pair(0));
            std::fill(dOp + ip * width, dOp + (ip + 1) * width, Pair(0));
          }
        }
        // dP[i][j] = dO_i . V_j, held transposed.
        pair_product<false>(Vr, hp, 1, keys, dOt, kQueries, hp, kQueries, dSt, kQueries);
        tiles::transposed_queries([&](int64_t i) { return Q + i * qs; }, n, kQueries, hd, scale, Qt);
        tiles::softmax_probs_transposed(Qt, hd, K, ks, keys, i0, n, row_max + i0, row_inverse + i0, Pt);
        // dS = P * (dP - sum_j P dP) * scale, 16 queries a vector, two keys at a time: P and
        // dS rounded as they lie (for dV and dK) and dS as pairs of keys (for dQ).
        __m512 rowdot = _mm512_setzero_ps();
        for (int64_t j = 0; j < keys; ++j)
          rowdot = _mm512_fmadd_ps(_mm512_loadu_ps(Pt + j * kQueries), _mm512_loadu_ps(dSt + j * kQueries), rowdot);
        const __m512 sc = _mm512_set1_ps(scale);
        const auto round_into = [](__m512 x, Pair* dst) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), __m256i(_mm512_cvtneps_pbh(x)));
        };
        for (int64_t jp = 0; jp < keys2; ++jp) {
          const int64_t j = 2 * jp;
          const bool second = j + 1 < keys;  // else the pair's second key weighs nothing
          const __m512 p0 = _mm512_loadu_ps(Pt + j * kQueries);
          const __m512 p1 = second ? _mm512_loadu_ps(Pt + (j + 1) * kQueries) : _mm512_setzero_ps();
          const __m512 ds0 = _mm512_mul_ps(_mm512_mul_ps(p0, _mm512_sub_ps(_mm512_loadu_ps(dSt + j * kQueries), rowdot)), sc);
          const __m512 ds1 =
              second ? _mm512_mul_ps(_mm512_mul_ps(p1, _mm512_sub_ps(_mm512_loadu_ps(dSt + (j + 1) * kQueries), rowdot)), sc)
                     : _mm512_setzero_ps();
          round_into(p0, Pr + j * kQueries / 2);
          round_into(ds0, dSr + j * kQueries / 2);
          if (second) {
            round_into(p1, Pr + (j + 1) * kQueries / 2);
            round_into(ds1, dSr + (j + 1) * kQueries / 2);
          }
          _mm512_storeu_si512(dSp + jp * kQueries, interleave_pairs(ds0, ds1));
        }
        // dQ = dS K;  dK += dS^T Q;  dV += P^T dO.
        pair_product<false>(dSp, 1, kQueries, kQueries, Kp, width, keys2, width, dQb, width);
        float* dQ = dq + ((b * T + i0) * Hq + h) * hd;
        for (int64_t i = 0; i < n; ++i) tiles::add_row(dQ + i * qs, dQb + i * width, hd);
        pair_product<true>(dSr, kQueries / 2, 1, keys, Qp, width, kQueries / 2, width, dKw, width);
        pair_product<true>(Pr, kQueries / 2, 1, keys, dOp, width, kQueries / 2, width, dVw, width);
      }
    }
    for (int64_t j = 0; j < T; ++j) {
      tiles::add_row(dk + ((b * T + j) * Hkv + kvh) * hd, dKw + j * width, hd);
      tiles::add_row(dv + ((b * T + j) * Hkv + kvh) * hd, dVw + j * width, hd);
    }
  });
}

#else

void attention_backward_bf16(const float*, const float*, const float*, const float*, const float*, float*, float*,
                             float*, const AttentionShape&) {
  MOEPP_CHECK(false, "attention_backward_bf16: this build has no AVX-512 BF16");
}

#endif

}  // namespace moepp
