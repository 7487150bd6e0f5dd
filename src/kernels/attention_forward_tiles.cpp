#include "kernels/attention_forward_tiles.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/attention_bf16.h"
#include "kernels/attention_pairs.h"
#include "kernels/attention_runs.h"
#include "kernels/attention_tiles.h"
#include "kernels/vec_math.h"

namespace moepp {

#if defined(__AVX512F__)
namespace {

constexpr int64_t kValueBlock = 128;  // keys a pass of P V reads (even: whole pairs of keys)

// Softmax down the columns of St [keys][Mp] (scores on entry), query m seeing keys
// j < seen[m]: each column's exact maximum (to row_max[m]), then exp(s - max) in place (0
// where unseen), and inverse[m] = 1 / its sum. The probabilities are St times inverse, as
// the backward recomputes them (softmax_probs_transposed, kernels/attention_tiles.h); P V
// is taken over the exponentials and scaled once per output row (a rounding fewer per term,
// and no pass over St to normalize it).
void softmax_columns(float* St, int64_t keys, int64_t Mp, const int32_t* seen, float* row_max, float* inverse) {
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
    _mm512_storeu_ps(row_max + c, mx);
    _mm512_storeu_ps(inverse + c, _mm512_maskz_div_ps(all, _mm512_set1_ps(1.0f), sum));
  }
}

// Where P V reads the values of (sequence b, kv head g): f32 rows `ld` floats apart,
// `width` of each readable (in place, or a padded copy), from rows + b per_b + g per_g; or
// bf16 pairs of positions, [B, Hkv, T2, width].
struct ValueRows {
  const float* rows = nullptr;
  int64_t ld = 0, per_b = 0, per_g = 0;
  const uint32_t* pairs = nullptr;
};

ValueRows f32_values(const float* v, const AttentionShape& s) {
  const int64_t T = s.seq, Hkv = s.kv_heads, hd = s.head_dim, width = (hd + 15) / 16 * 16;
  if (width == hd) return {v, Hkv * hd, T * Hkv * hd, hd, nullptr};
  static thread_local AlignedVector<float> padded_buffer;
  AlignedVector<float>& padded = padded_buffer;  // [B, Hkv, T, width], zero past hd
  padded.resize(size_t(s.batch * Hkv * T * width));
  parallel_for(s.batch * Hkv, [&](int64_t bg) {
    const int64_t b = bg / Hkv, g = bg % Hkv;
    for (int64_t j = 0; j < T; ++j) {
      const float* row = v + ((b * T + j) * Hkv + g) * hd;
      float* to = padded.data() + (bg * T + j) * width;
      std::copy(row, row + hd, to);
      std::fill(to + hd, to + width, 0.0f);
    }
  });
  return {padded.data(), width, Hkv * T * width, T * width, nullptr};
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
ValueRows paired_values(const float* v, const AttentionShape& s) {
  const int64_t B = s.batch, T = s.seq, Hkv = s.kv_heads, hd = s.head_dim, width = (hd + 15) / 16 * 16, T2 = (T + 1) / 2;
  static thread_local AlignedVector<bf16_pairs::Pair> pairs_buffer;
  AlignedVector<bf16_pairs::Pair>& value_pairs = pairs_buffer;
  value_pairs.resize(size_t(B * Hkv * T2 * width));
  parallel_for(B * Hkv * T2, [&](int64_t t) {
    const int64_t b = t / (Hkv * T2), g = t / T2 % Hkv, jp = t % T2;
    const float* v0 = v + ((b * T + 2 * jp) * Hkv + g) * hd;
    bf16_pairs::pair_rows(v0, 2 * jp + 1 < T ? v0 + Hkv * hd : nullptr, hd, width, value_pairs.data() + t * width);
  });
  ValueRows r;
  r.pairs = value_pairs.data();
  return r;
}

// O [Mp, width] += P V with P (St [keys, Mp]) rounded to bf16 as pairs of keys (the last
// pair's second key, past the history, weighs 0) and V given as such pairs.
void values_times_bf16(const float* St, int64_t Mp, int64_t keys, const bf16_pairs::Pair* V, int64_t width, float* O) {
  const int64_t keys2 = (keys + 1) / 2;
  thread_local AlignedVector<bf16_pairs::Pair> pair_scratch;
  bf16_pairs::Pair* Pp;
  tiles::carve_scratch(pair_scratch, {{&Pp, keys2 * Mp}});
  for (int64_t jp = 0; jp < keys2; ++jp)
    bf16_pairs::pair_rows(St + 2 * jp * Mp, 2 * jp + 1 < keys ? St + (2 * jp + 1) * Mp : nullptr, Mp, Mp, Pp + jp * Mp);
  bf16_pairs::pair_product<true>(Pp, 1, Mp, Mp, V, width, keys2, width, O, width);
}
#else
ValueRows paired_values(const float*, const AttentionShape&) {
  MOEPP_CHECK(false, "attention_forward_tiles: this build has no AVX-512 BF16");
  return {};
}
void values_times_bf16(const float*, int64_t, int64_t, const uint32_t*, int64_t, float*) {
  MOEPP_CHECK(false, "attention_forward_tiles: this build has no AVX-512 BF16");
}
#endif

}  // namespace

void attention_forward_tiles(const float* q, const float* k, const float* v, float* out, float* stats,
                             const AttentionShape& s, bool bf16_values) {
  MOEPP_CHECK(attention_in_tiles(), "attention_forward_tiles: this build has no AVX-512");
  MOEPP_CHECK(!bf16_values || attention_bf16_available(s.head_dim), "attention_forward_tiles: bf16 values at head_dim ",
              s.head_dim, " (needs AVX-512 BF16 and an even head_dim)");
  const int64_t B = s.batch, T = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim, G = Hq / Hkv;
  const int64_t width = (hd + 15) / 16 * 16, T2 = (T + 1) / 2;
  const float scale = 1.0f / std::sqrt(float(hd));
  // What P V reads: bf16 values as pairs of consecutive positions, [B, Hkv, T2, width];
  // f32 ones in place, or as rows `width` long where hd is not a whole number of vectors.
  const ValueRows values = bf16_values ? paired_values(v, s) : f32_values(v, s);
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
    const int64_t M = rows * G, Mp = (M + 15) / 16 * 16, keys = r0 + rows;
    const auto query_row = [&](int64_t m) { return (b * T + r0 + m / G) * Hq + kvh * G + m % G; };
    thread_local AlignedVector<float> float_scratch;
    float *Qt, *St, *O;
    tiles::carve_scratch(float_scratch, {{&Qt, hd * Mp}, {&St, keys * Mp}, {&O, Mp * width}});
    // St[j][m] = q_m . k_j * scale, then their exponentials.
    tiles::transposed_queries([&](int64_t m) { return q + query_row(m) * hd; }, M, Mp, hd, scale, Qt);
    tiles::transposed_scores_of(Mp, Qt, hd, k + (b * T * Hkv + kvh) * hd, Hkv * hd, keys, St);
    alignas(64) int32_t seen[kRunBlockQueries];
    for (int64_t m = 0; m < Mp; ++m) seen[m] = int32_t(r0 + 1 + (m < M ? m / G : 0));  // padding: the first row's
    alignas(64) float row_max[kRunBlockQueries], inverse[kRunBlockQueries];
    softmax_columns(St, keys, Mp, seen, row_max, inverse);
    for (int64_t m = 0; m < M; ++m) {
      const int64_t h = kvh * G + m % G, i = r0 + m / G;
      softmax_max(stats, b, h, s)[i] = row_max[m];
      softmax_inverse(stats, b, h, s)[i] = inverse[m];
    }
    // O = P V, a block of keys at a time so that the block's values stay in L1 while every
    // query of the run reads them.
    std::fill(O, O + Mp * width, 0.0f);
    for (int64_t j0 = 0; j0 < keys; j0 += kValueBlock) {
      const int64_t kb = std::min(kValueBlock, keys - j0);
      if (bf16_values) {
        values_times_bf16(St + j0 * Mp, Mp, kb, values.pairs + ((b * Hkv + kvh) * T2 + j0 / 2) * width, width, O);
      } else {
        const float* V = values.rows + b * values.per_b + kvh * values.per_g + j0 * values.ld;
        tiles::transposed_values_all(St + j0 * Mp, Mp, kb, V, values.ld, O, width);
      }
    }
    for (int64_t m = 0; m < M; ++m) {
      float* o = out + query_row(m) * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] = O[m * width + d] * inverse[m];
    }
  });
}

#else

void attention_forward_tiles(const float*, const float*, const float*, float*, float*, const AttentionShape&, bool) {
  MOEPP_CHECK(false, "attention_forward_tiles: this build has no AVX-512");
}

#endif

}  // namespace moepp
