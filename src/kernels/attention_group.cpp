#include "kernels/attention_group.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "kernels/softmax.h"
#include "kernels/vec_math.h"

namespace moepp {

#if defined(__AVX512F__)

namespace {

// Value rows are fetched this many rows ahead (prefetch_row), key rows a block of 16.
constexpr int64_t kAheadRows = 8;

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Lane i of the result is the sum of the 16 lanes of p[i]: four rounds of pairwise
// shuffles and adds, each halving the vectors, then one permutation into key order.
inline __m512 sum_each(const __m512 (&p)[16]) {
  using V = __v16sf;
  // Pairing quarters: [a's quarters 0+1, 2+3, b's 0+1, 2+3] (the same shuffles pair
  // quarters again in the second round, where each quarter then holds one key).
  const auto pair_quarters = [](V a, V b) {
    return __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  };
  V halves[8], quarters[4];
  for (int i = 0; i < 8; ++i) halves[i] = pair_quarters(V(p[2 * i]), V(p[2 * i + 1]));
  for (int i = 0; i < 4; ++i) quarters[i] = pair_quarters(halves[2 * i], halves[2 * i + 1]);
  // Quarter t of quarters[i] now holds key 4i + t's four partial sums.
  V pairs[2];
  for (int i = 0; i < 2; ++i) {
    const V e = quarters[2 * i], f = quarters[2 * i + 1];
    pairs[i] = __builtin_shufflevector(e, f, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29) +
               __builtin_shufflevector(e, f, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
  }
  const V g = pairs[0], h = pairs[1];
  const V sums = __builtin_shufflevector(g, h, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
                 __builtin_shufflevector(g, h, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  // Lane 4t + u holds key 4u + t.
  return __m512(__builtin_shufflevector(sums, sums, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
}

// score[g][j0 + i] = q_g . k_i * scale for the n <= 16 key rows kb[i * kstride] of one
// block, every head in turn (the block's rows stay in L1 across the heads).
template <int NC, typename T>
void score_block(const float* q, int64_t G, const T* kb, int64_t kstride, int n, __m512 scale_v, int64_t j0,
                 float* const* score) {
  constexpr int64_t hd = NC * 16;
  for (int64_t g = 0; g < G; ++g) {
    __m512 qv[NC];
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) qv[c] = _mm512_loadu_ps(q + g * hd + 16 * c);
    __m512 part[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i >= n) {
        part[i] = _mm512_setzero_ps();
        continue;
      }
      const T* kj = kb + i * kstride;
      // Two chains, so that a key's sum waits on NC / 2 FMAs, not NC.
      __m512 even = _mm512_mul_ps(qv[0], load16(kj)), odd = _mm512_mul_ps(qv[1], load16(kj + 16));
#pragma GCC unroll 16
      for (int c = 2; c < NC; c += 2) {
        even = _mm512_fmadd_ps(qv[c], load16(kj + 16 * c), even);
        if (c + 1 < NC) odd = _mm512_fmadd_ps(qv[c + 1], load16(kj + 16 * (c + 1)), odd);
      }
      part[i] = _mm512_add_ps(even, odd);
    }
    _mm512_mask_storeu_ps(score[g] + j0, tail_mask16(n), _mm512_mul_ps(sum_each(part), scale_v));
  }
}

// score[g][j] = q_g . k_j * scale, 16 keys at a time for every head. bf16 keys that
// several heads share are widened once a block, into f32 rows in L1, not once a head: the
// same values, so the same scores (one core, bf16 cache, 8 kv heads: 4 heads of 128 over
// 256 keys 105 -> 78 us a layer, over 4096 (16 MB) 4.4-4.7 -> 3.7 ms; 2 heads of 64
// over 256 keys 30 -> 26-28 us).
template <int NC, typename KV>
void group_scores(const float* q, int64_t G, const KV* k, int64_t stride, int64_t L, float scale,
                  float* const* score) {
  constexpr int64_t hd = NC * 16;
  const __m512 scale_v = _mm512_set1_ps(scale);
  for (int64_t j0 = 0; j0 < L; j0 += 16) {
    const int n = int(std::min<int64_t>(16, L - j0));
    for (int64_t i = j0 + 16; i < std::min(L, j0 + 32); ++i) prefetch_row(k + i * stride, NC * 16 * sizeof(KV));  // the next block
    if constexpr (std::is_same_v<KV, uint16_t>) {
      if (G > 1) {
        alignas(64) float wide[16 * hd];
        for (int i = 0; i < n; ++i)
#pragma GCC unroll 16
          for (int c = 0; c < NC; ++c) _mm512_store_ps(wide + i * hd + 16 * c, load16(k + (j0 + i) * stride + 16 * c));
        score_block<NC>(q, G, wide, hd, n, scale_v, j0, score);
        continue;
      }
    }
    score_block<NC>(q, G, k + j0 * stride, stride, n, scale_v, j0, score);
  }
}

// out_h = sum_j p[h][j] v_j for HP heads, their outputs held in registers over all values.
template <int NC, int HP, typename KV>
void group_values(float* const* p, const KV* v, int64_t stride, int64_t L, float* out, bool prefetch) {
  __m512 o[HP][NC];
#pragma GCC unroll 16
  for (int h = 0; h < HP; ++h)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) o[h][c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < L; ++j) {
    const KV* vj = v + j * stride;
    if (prefetch && j + kAheadRows < L) prefetch_row(vj + kAheadRows * stride, NC * 16 * sizeof(KV));
    __m512 pv[HP];
#pragma GCC unroll 16
    for (int h = 0; h < HP; ++h) pv[h] = _mm512_set1_ps(p[h][j]);
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) {
      const __m512 vc = in_register(load16(vj + 16 * c));  // one load for the HP heads
#pragma GCC unroll 16
      for (int h = 0; h < HP; ++h) o[h][c] = _mm512_fmadd_ps(pv[h], vc, o[h][c]);
    }
  }
#pragma GCC unroll 16
  for (int h = 0; h < HP; ++h)
#pragma GCC unroll 16
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + h * NC * 16 + 16 * c, o[h][c]);
}

template <int NC, typename KV>
void attend(const float* q, int64_t G, const KV* k, const KV* v, int64_t stride, int64_t L, float scale,
            float* const* score, float* out) {
  group_scores<NC>(q, G, k, stride, L, scale, score);
  for (int64_t g = 0; g < G; ++g) softmax_in_place(score[g], L);
  // As many heads a pass as 16 registers of outputs hold (4, 2 or 1), fewer where fewer are
  // left; a pass after the first reads the values from cache.
  constexpr int HP = std::max(1, 16 / NC);
  int64_t g = 0;
  for (; g + HP <= G; g += HP) group_values<NC, HP>(score + g, v, stride, L, out + g * NC * 16, g == 0);
  if constexpr (HP >= 4) {
    if (g + 2 <= G) {
      group_values<NC, 2>(score + g, v, stride, L, out + g * NC * 16, g == 0);
      g += 2;
    }
  }
  for (; g < G; ++g) group_values<NC, 1>(score + g, v, stride, L, out + g * NC * 16, g == 0);
}

template <typename KV>
void attend_by_head_dim(const float* q, int64_t G, int64_t hd, const KV* k, const KV* v, int64_t stride, int64_t L,
                        float scale, float* const* score, float* out) {
  switch (hd) {
    case 64: return attend<4>(q, G, k, v, stride, L, scale, score, out);
    case 96: return attend<6>(q, G, k, v, stride, L, scale, score, out);
    case 128: return attend<8>(q, G, k, v, stride, L, scale, score, out);
    case 256: return attend<16>(q, G, k, v, stride, L, scale, score, out);
    default: fail("attend_group_vectorised: head dim ", hd, " (64, 96, 128 or 256)");
  }
}

}  // namespace

bool group_attention_vectorised(int64_t head_dim) {
  return head_dim == 64 || head_dim == 96 || head_dim == 128 || head_dim == 256;
}

void attend_group_vectorised(const float* q, int64_t G, int64_t hd, const float* k, const float* v, int64_t stride,
                             int64_t L, float scale, float* const* score, float* out) {
  attend_by_head_dim(q, G, hd, k, v, stride, L, scale, score, out);
}

void attend_group_vectorised(const float* q, int64_t G, int64_t hd, const uint16_t* k, const uint16_t* v,
                             int64_t stride, int64_t L, float scale, float* const* score, float* out) {
  attend_by_head_dim(q, G, hd, k, v, stride, L, scale, score, out);
}

#else

bool group_attention_vectorised(int64_t) { return false; }

void attend_group_vectorised(const float*, int64_t, int64_t, const float*, const float*, int64_t, int64_t, float,
                             float* const*, float*) {
  fail("attend_group_vectorised: built without AVX-512");
}

void attend_group_vectorised(const float*, int64_t, int64_t, const uint16_t*, const uint16_t*, int64_t, int64_t,
                             float, float* const*, float*) {
  fail("attend_group_vectorised: built without AVX-512");
}

#endif

}  // namespace moepp
