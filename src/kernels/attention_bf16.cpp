#include "kernels/attention_bf16.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/attention_runs.h"
#include "kernels/attention_tiles.h"
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

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
namespace {

// Two bf16 values in one 32-bit word, the first in the low half: what a lane of vdpbf16ps
// multiplies by the same lane of its other operand, adding both products to its f32 sum.
// Every product here is sum_p A(r, p) . B[p][c] over such pairs p: A's word broadcast, 16
// columns of B's words a vector.
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

// dst[p][m] = (row(m)[2p], row(m)[2p + 1]) * scale for p < hd / 2, m < Mp (rows from M on
// zero): rows transposed so that 16 of them are a vector.
template <typename RowOf>
void pairs_transposed(const RowOf& row, int64_t M, int64_t Mp, int64_t hd, float scale, Pair* dst) {
  tiles::for_each_transposed_block(row, M, Mp, hd, scale, [&](int64_t m0, int64_t d0, const __m512 (&r)[16]) {
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
void pair_rows_of(const Pair* A, int64_t ar, int64_t ap, int64_t rows, const Pair* B, int64_t bp, int64_t pairs,
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
void pair_product(const Pair* A, int64_t ar, int64_t ap, int64_t rows, const Pair* B, int64_t bp, int64_t pairs,
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

// The probabilities of Mp queries (columns of St [keys][Mp], scores on entry) in place:
// query m sees keys j < seen[m]; each column's exact maximum, sum and normalization.
void softmax_columns(float* St, int64_t keys, int64_t Mp, const int32_t* seen) {
  constexpr __mmask16 all = 0xFFFF;
  for (int64_t c = 0; c < Mp; c += 16) {
    const __m512i limit = _mm512_loadu_si512(seen + c);
    const auto visible = [&](int64_t j) { return _mm512_cmpgt_epi32_mask(limit, _mm512_set1_epi32(int32_t(j))); };
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < keys; ++j) mx = _mm512_mask_max_ps(mx, visible(j), mx, _mm512_loadu_ps(St + j * Mp + c));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < keys; ++j) {
      const __m512 p = _mm512_maskz_mov_ps(visible(j), exp16(_mm512_sub_ps(_mm512_loadu_ps(St + j * Mp + c), mx)));
      _mm512_storeu_ps(St + j * Mp + c, p);
      sum = _mm512_add_ps(sum, p);
    }
    const __m512 inv = _mm512_maskz_div_ps(all, _mm512_set1_ps(1.0f), sum);
    for (int64_t j = 0; j < keys; ++j) _mm512_storeu_ps(St + j * Mp + c, _mm512_mul_ps(_mm512_loadu_ps(St + j * Mp + c), inv));
  }
}

}  // namespace

void attention_forward_bf16(const float* q, const float* k, const float* v, float* out, float* probs,
                            const AttentionShape& s) {
  MOEPP_CHECK(attention_bf16_available(s.head_dim), "attention_forward_bf16: head_dim ", s.head_dim,
              " (needs AVX-512 BF16 and an even head_dim)");
  const int64_t B = s.batch, T = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim, G = Hq / Hkv;
  const int64_t width = (hd + 15) / 16 * 16, T2 = (T + 1) / 2;
  const float scale = 1.0f / std::sqrt(float(hd));
  // Values as pairs of consecutive positions, [B, Hkv, T2, width]: what P V sums over.
  static thread_local AlignedVector<Pair> values_buffer;
  AlignedVector<Pair>& value_pairs = values_buffer;
  value_pairs.resize(size_t(B * Hkv * T2 * width));
  parallel_for(B * Hkv * T2, [&](int64_t t) {
    const int64_t b = t / (Hkv * T2), g = t / T2 % Hkv, jp = t % T2;
    const float* v0 = v + ((b * T + 2 * jp) * Hkv + g) * hd;
    pair_rows(v0, 2 * jp + 1 < T ? v0 + Hkv * hd : nullptr, hd, width, value_pairs.data() + t * width);
  });
  // A task: rows r0 .. r0 + rows - 1 of sequence b with the G query heads of kv head kvh,
  // M = rows G <= 64 queries, against the r0 + rows keys its last row sees.
  struct Task {
    int64_t b, kvh, r0, rows;
  };
  std::vector<Task> tasks;
  const int64_t block_rows = std::max<int64_t>(1, kRunBlockQueries / G);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r0 = 0; r0 < T; r0 += block_rows)
      for (int64_t kvh = 0; kvh < Hkv; ++kvh) tasks.push_back({b, kvh, r0, std::min(block_rows, T - r0)});
  // The costliest (latest rows) first, so that the dynamic schedule ends with small tasks.
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& x, const Task& y) { return x.r0 > y.r0; });
  parallel_for_dynamic(int64_t(tasks.size()), [&](int64_t t) {
    const auto [b, kvh, r0, rows] = tasks[size_t(t)];
    const int64_t M = rows * G, Mp = (M + 15) / 16 * 16, keys = r0 + rows, keys2 = (keys + 1) / 2;
    const auto query_row = [&](int64_t m) { return (b * T + r0 + m / G) * Hq + kvh * G + m % G; };
    thread_local AlignedVector<Pair> pair_scratch;
    thread_local AlignedVector<float> float_scratch;
    Pair* Pp;
    float *Qt, *St, *O;
    tiles::carve_scratch(pair_scratch, {{&Pp, keys2 * Mp}});
    tiles::carve_scratch(float_scratch, {{&Qt, hd * Mp}, {&St, keys * Mp}, {&O, Mp * width}});
    // St[j][m] = q_m . k_j * scale in f32 (see the header), then the probabilities.
    tiles::transposed_queries([&](int64_t m) { return q + query_row(m) * hd; }, M, Mp, hd, scale, Qt);
    tiles::transposed_scores_of(Mp, Qt, hd, k + (b * T * Hkv + kvh) * hd, Hkv * hd, keys, St);
    alignas(64) int32_t seen[kRunBlockQueries];
    for (int64_t m = 0; m < Mp; ++m) seen[m] = int32_t(r0 + 1 + (m < M ? m / G : 0));  // padding: the first row's
    softmax_columns(St, keys, Mp, seen);
    float* rows_of_probs[kRunBlockQueries];
    for (int64_t i = 0; i < rows; ++i) rows_of_probs[i] = probs + ((b * Hq + kvh * G) * T + r0 + i) * T;
    tiles::copy_probs_transposed(St, Mp, M, keys, G, RunProbs<float>{rows_of_probs, T * T, T}, 0);
    for (int64_t m = 0; m < M; ++m) {
      float* p = rows_of_probs[m / G] + (m % G) * T * T;
      std::fill(p + keys, p + probs_written_end(keys, T), 0.0f);
    }
    // O = P V over pairs of keys (the last pair's second key, past the history, weighs 0).
    for (int64_t jp = 0; jp < keys2; ++jp)
      pair_rows(St + 2 * jp * Mp, 2 * jp + 1 < keys ? St + (2 * jp + 1) * Mp : nullptr, Mp, Mp, Pp + jp * Mp);
    pair_product<false>(Pp, 1, Mp, Mp, value_pairs.data() + (b * Hkv + kvh) * T2 * width, width, keys2, width, O,
                        width);
    for (int64_t m = 0; m < M; ++m) std::copy(O + m * width, O + m * width + hd, out + query_row(m) * hd);
  });
}

void attention_backward_bf16(const float* q, const float* k, const float* v, const float* probs, const float* dout,
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
    // rounded as they lie (P, dS for dK and dV) and as pairs of keys (dS for dQ).
    thread_local AlignedVector<Pair> pair_scratch;
    thread_local AlignedVector<float> float_scratch;
    Pair *Kp, *Vr, *dOt, *Qp, *dOp, *Pr, *dSr, *dSp;
    float *dKw, *dVw, *dQb, *Pt, *dSt;
    tiles::carve_scratch(pair_scratch, {{&Kp, T2 * width},
                                        {&Vr, T * hp},
                                        {&dOt, hp * kQueries},
                                        {&Qp, kQueries / 2 * width},
                                        {&dOp, kQueries / 2 * width},
                                        {&Pr, T * kQueries / 2},
                                        {&dSr, T * kQueries / 2},
                                        {&dSp, T2 * kQueries}});
    tiles::carve_scratch(float_scratch,
                         {{&dKw, T * width}, {&dVw, T * width}, {&dQb, kQueries * width}, {&Pt, T * kQueries}, {&dSt, T * kQueries}});
    std::fill(dKw, dKw + T * width, 0.0f);  // dKw and dVw: sums
    std::fill(dVw, dVw + T * width, 0.0f);
    const float* K = k + (b * T * Hkv + kvh) * hd;  // row j at K + j * ks
    const float* V = v + (b * T * Hkv + kvh) * hd;
    for (int64_t jp = 0; jp < T2; ++jp)
      pair_rows(K + 2 * jp * ks, 2 * jp + 1 < T ? K + (2 * jp + 1) * ks : nullptr, hd, width, Kp + jp * width);
    for (int64_t j = 0; j < T; ++j) round_row_pairs(V + j * ks, hd, Vr + j * hp);
    for (int64_t h = kvh * G; h < (kvh + 1) * G; ++h) {
      const float* P = probs + (b * Hq + h) * T * T;
      for (int64_t i0 = 0; i0 < T; i0 += kQueries) {
        const int64_t n = std::min(kQueries, T - i0), keys = std::min(T, i0 + kQueries), keys2 = (keys + 1) / 2;
        const float* dO = dout + ((b * T + i0) * Hq + h) * hd;  // query i's row at + i qs
        const float* Q = q + ((b * T + i0) * Hq + h) * hd;
        const auto row = [&](const float* x, int64_t i) { return i < n ? x + i * qs : nullptr; };
        pairs_transposed([&](int64_t i) { return dO + i * qs; }, n, kQueries, hd, 1.0f, dOt);
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
        tiles::transpose_rows(P + i0 * T, T, n, keys, Pt);
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

void attention_forward_bf16(const float*, const float*, const float*, float*, float*, const AttentionShape&) {
  MOEPP_CHECK(false, "attention_forward_bf16: this build has no AVX-512 BF16");
}
void attention_backward_bf16(const float*, const float*, const float*, const float*, const float*, float*, float*,
                             float*, const AttentionShape&) {
  MOEPP_CHECK(false, "attention_backward_bf16: this build has no AVX-512 BF16");
}

#endif

}  // namespace moepp
