#include "kernels/attention_runs.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/attention_tiles.h"
#include "kernels/softmax.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {

constexpr int64_t kKeyBlock = 128;  // keys per tile: S is kRunBlockQueries x 128 (32 KB in f32)

template <typename T>
T widen(T x) {
  return x;
}
float widen(uint16_t bits) { return bf16_to_f32(bf16{bits}); }

// S[m][j] = sum_d Q[m][d] Kt[d][j] for m < M, j < kKeyBlock (Kt zero beyond the block's keys).
template <typename T>
void scores_tile(const T* Q, int64_t hd, int64_t M, const T* Kt, T* S) {
  for (int64_t m = 0; m < M; ++m) {
    T* s = S + m * kKeyBlock;
    std::fill(s, s + kKeyBlock, T(0));
    for (int64_t d = 0; d < hd; ++d) {
      const T qd = Q[m * hd + d];
      const T* kt = Kt + d * kKeyBlock;
#pragma omp simd
      for (int64_t j = 0; j < kKeyBlock; ++j) s[j] += qd * kt[j];
    }
  }
}

// O[m][:] += sum_{j < kb} S[m][j] V[j][:], rows of O and V `width` long.
template <typename T>
void values_tile(const T* S, int64_t M, int64_t kb, const T* V, int64_t width, T* O) {
  for (int64_t m = 0; m < M; ++m) {
    T* o = O + m * width;
    for (int64_t j = 0; j < kb; ++j) {
      const T p = S[m * kKeyBlock + j];
      const T* vj = V + j * width;
#pragma omp simd
      for (int64_t d = 0; d < width; ++d) o[d] += p * vj[d];
    }
  }
}

#if defined(__AVX512F__)
// f32 runs on AVX-512 hold the scores transposed, St[j][m] for key j of the block and query
// m, 16 queries to a vector (Mp = 16 * MV columns, the queries past M zero). The keys are
// then read as the cache stores them: each element of a key row is broadcast against 16
// queries, where the layout above needs the block's keys transposed (a strided scalar
// copy, a third of the run's time). The online softmax runs down the columns, 16 queries'
// maxima and sums at a time, and the causal mask is a compare per key and vector.

// rows of n elements, `ld` apart, as f32 rows `width` long (zero past n).
template <typename KV>
void widen_rows(const KV* x, int64_t ld, int64_t rows, int64_t n, int64_t width, float* out) {
  for (int64_t j = 0; j < rows; ++j) {
    float* o = out + j * width;
    for (int64_t d = 0; d < n; ++d) o[d] = widen(x[j * ld + d]);
    std::fill(o + n, o + width, 0.0f);
  }
}

template <int MV, typename KV>
void attend_run_transposed(const float* q, int64_t row_stride, int64_t rows, int64_t G, int64_t hd, const KV* k,
                           const KV* v, int64_t kv_stride, int64_t first_context, float scale, float* out) {
  constexpr int64_t Mp = 16 * MV;
  const int64_t M = rows * G, width = (hd + 15) / 16 * 16;
  // f32 histories are read in place; bf16 ones (and values whose rows are not whole
  // vectors) are widened a block at a time.
  constexpr bool f32_history = std::is_same_v<KV, float>;
  const bool values_in_place = f32_history && width == hd;
  thread_local AlignedVector<float> scratch;
  float *Qt, *St, *O, *Kw, *Vw, *rescale, *inverse;
  tiles::carve_scratch(scratch, {{&Qt, hd * Mp},
                                 {&St, kKeyBlock * Mp},
                                 {&O, Mp * width},
                                 {&Kw, f32_history ? 0 : kKeyBlock * hd},
                                 {&Vw, values_in_place ? 0 : kKeyBlock * width},
                                 {&rescale, Mp},
                                 {&inverse, Mp}});
  std::fill(O, O + Mp * width, 0.0f);
  // Qt [hd, Mp] = Q^T * scale (query m = i G + g), queries past M zero.
  tiles::transposed_queries([&](int64_t m) { return q + (m / G) * row_stride + (m % G) * hd; }, M, Mp, hd, scale, Qt);
  // Query m sees keys [0, seen[m]); the padding queries see the first row's keys (finite
  // scores; their results are dropped).
  alignas(64) int32_t seen[Mp];
  for (int64_t m = 0; m < Mp; ++m) seen[m] = int32_t(first_context + (m < M ? m / G : 0));
  __m512 running_max[MV], running_sum[MV];
  for (int c = 0; c < MV; ++c) {
    running_max[c] = _mm512_set1_ps(-INFINITY);
    running_sum[c] = _mm512_setzero_ps();
  }
  constexpr __mmask16 all = 0xFFFF;
  const int64_t keys = first_context + rows - 1;  // what the last row sees
  for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
    const int64_t kb = std::min(kKeyBlock, keys - j0);
    const float* K = nullptr;
    int64_t ldk = kv_stride;
    if constexpr (f32_history) {
      K = k + j0 * kv_stride;
    } else {
      widen_rows(k + j0 * kv_stride, kv_stride, kb, hd, hd, Kw);
      K = Kw;
      ldk = hd;
    }
    tiles::transposed_scores<MV>(Qt, hd, K, ldk, kb, St);
    const bool masked = j0 + kb > first_context;  // the block reaches past the first row's keys
    for (int c = 0; c < MV; ++c) {
      const __m512i limit = _mm512_loadu_si512(seen + 16 * c);
      auto visible = [&](int64_t j) {
        return masked ? _mm512_cmpgt_epi32_mask(limit, _mm512_set1_epi32(int32_t(j0 + j))) : all;
      };
      __m512 block_max = _mm512_set1_ps(-INFINITY);
      for (int64_t j = 0; j < kb; ++j)
        block_max = _mm512_mask_max_ps(block_max, visible(j), block_max, _mm512_loadu_ps(St + j * Mp + 16 * c));
      const __m512 new_max = _mm512_maskz_max_ps(all, running_max[c], block_max);
      // exp16 clamps its argument: -inf (a first block) gives ~1e-38 times a zero sum.
      const __m512 r = exp16(_mm512_sub_ps(running_max[c], new_max));
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j = 0; j < kb; ++j) {
        const __m512 s = _mm512_loadu_ps(St + j * Mp + 16 * c);
        const __m512 p = _mm512_maskz_mov_ps(visible(j), exp16(_mm512_sub_ps(s, new_max)));
        _mm512_storeu_ps(St + j * Mp + 16 * c, p);
        sum = _mm512_add_ps(sum, p);
      }
      running_sum[c] = _mm512_fmadd_ps(running_sum[c], r, sum);
      running_max[c] = new_max;
      _mm512_storeu_ps(rescale + 16 * c, r);
    }
    if (j0 > 0)  // O is zero before the first block
      for (int64_t m = 0; m < Mp; ++m)
        if (rescale[m] != 1.0f) {
          const __m512 r = _mm512_set1_ps(rescale[m]);
          for (int64_t d = 0; d < width; d += 16)
            _mm512_storeu_ps(O + m * width + d, _mm512_mul_ps(r, _mm512_loadu_ps(O + m * width + d)));
        }
    const float* V = Vw;
    int64_t ldv = width;
    if constexpr (f32_history) {
      if (values_in_place) {
        V = v + j0 * kv_stride;
        ldv = kv_stride;
      }
    }
    if (V == Vw) widen_rows(v + j0 * kv_stride, kv_stride, kb, hd, width, Vw);
    tiles::transposed_values_all(St, Mp, kb, V, ldv, O, width);
  }
  for (int c = 0; c < MV; ++c) _mm512_storeu_ps(inverse + 16 * c, _mm512_div_ps(_mm512_set1_ps(1.0f), running_sum[c]));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t m = i * G + g;
      for (int64_t d = 0; d < hd; ++d) out[i * row_stride + g * hd + d] = O[m * width + d] * inverse[m];
    }
}
#endif

}  // namespace

template <typename T, typename KV>
void attend_run(const T* q, int64_t row_stride, int64_t rows, int64_t G, int64_t hd, const KV* k, const KV* v,
                int64_t kv_stride, int64_t first_context, T scale, T* out) {
  const int64_t M = rows * G;
  MOEPP_CHECK(M <= kRunBlockQueries && first_context >= 1, "attend_run: ", rows, " rows x ", G,
              " heads from context ", first_context);
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    static_assert(kRunBlockQueries == 64, "attend_run_transposed is instantiated for 1 to 4 vectors of queries");
    switch ((M + 15) / 16) {
      case 1: return attend_run_transposed<1>(q, row_stride, rows, G, hd, k, v, kv_stride, first_context, scale, out);
      case 2: return attend_run_transposed<2>(q, row_stride, rows, G, hd, k, v, kv_stride, first_context, scale, out);
      case 3: return attend_run_transposed<3>(q, row_stride, rows, G, hd, k, v, kv_stride, first_context, scale, out);
      default: return attend_run_transposed<4>(q, row_stride, rows, G, hd, k, v, kv_stride, first_context, scale, out);
    }
  }
#endif
  // Value and output rows padded to 16 lanes so the tiles need no ragged tail.
  const int64_t width = (hd + 15) / 16 * 16;
  thread_local AlignedVector<T> scratch;
  scratch.resize(size_t(M * hd + hd * kKeyBlock + kKeyBlock * width + M * kKeyBlock + M * width + 2 * M));
  T* Q = scratch.data();
  T* Kt = Q + M * hd;
  T* V = Kt + hd * kKeyBlock;
  T* S = V + kKeyBlock * width;
  T* O = S + M * kKeyBlock;
  T* running_max = O + M * width;
  T* running_sum = running_max + M;
  // Zeroed: what is read before it is written (Q, Kt, S and V's first hd columns are
  // written first in every block).
  std::fill(O, O + M * width, T(0));
  std::fill(running_sum, running_sum + M, T(0));
  if (width > hd)
    for (int64_t j = 0; j < kKeyBlock; ++j) std::fill(V + j * width + hd, V + (j + 1) * width, T(0));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < hd; ++d) Q[(i * G + g) * hd + d] = q[i * row_stride + g * hd + d] * scale;
  std::fill(running_max, running_max + M, -INFINITY);

  const int64_t keys = first_context + rows - 1;  // what the last row sees
  for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
    const int64_t kb = std::min(kKeyBlock, keys - j0);
    for (int64_t j = 0; j < kb; ++j) {
      const KV* kj = k + (j0 + j) * kv_stride;
      const KV* vj = v + (j0 + j) * kv_stride;
      for (int64_t d = 0; d < hd; ++d) {
        Kt[d * kKeyBlock + j] = widen(kj[d]);
        V[j * width + d] = widen(vj[d]);
      }
    }
    if (kb < kKeyBlock)  // the last block: keys past the history are zero, never weighted
      for (int64_t d = 0; d < hd; ++d) std::fill(Kt + d * kKeyBlock + kb, Kt + (d + 1) * kKeyBlock, T(0));
    scores_tile(Q, hd, M, Kt, S);
    for (int64_t m = 0; m < M; ++m) {
      T* s = S + m * kKeyBlock;
      const int64_t seen = std::min(kb, first_context + m / G - j0);  // keys of this block the row sees
      if (seen <= 0) {
        std::fill(s, s + kb, T(0));
        continue;
      }
      const T block_max = *std::max_element(s, s + seen);
      const T new_max = std::max(running_max[m], block_max);
      const T rescale = std::exp(running_max[m] - new_max);  // 0 at the first block
      running_sum[m] = running_sum[m] * rescale + exp_shifted(s, seen, new_max);
      running_max[m] = new_max;
      std::fill(s + seen, s + kb, T(0));
      if (rescale != T(1))
        for (int64_t d = 0; d < width; ++d) O[m * width + d] *= rescale;
    }
    values_tile(S, M, kb, V, width, O);
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t g = 0; g < G; ++g) {
      const int64_t m = i * G + g;
      const T inv = T(1) / running_sum[m];
      for (int64_t d = 0; d < hd; ++d) out[i * row_stride + g * hd + d] = O[m * width + d] * inv;
    }
}

template void attend_run<float, float>(const float*, int64_t, int64_t, int64_t, int64_t, const float*, const float*,
                                       int64_t, int64_t, float, float*);
template void attend_run<float, uint16_t>(const float*, int64_t, int64_t, int64_t, int64_t, const uint16_t*,
                                          const uint16_t*, int64_t, int64_t, float, float*);
template void attend_run<double, double>(const double*, int64_t, int64_t, int64_t, int64_t, const double*,
                                         const double*, int64_t, int64_t, double, double*);

}  // namespace moepp
