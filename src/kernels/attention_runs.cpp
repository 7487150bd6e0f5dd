#include "kernels/attention_runs.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
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
// Four queries by 16 keys in registers: per step of d, one load of Kt and four broadcasts
// feed four FMAs (the generic loop above loads and stores S for every FMA).
template <>
void scores_tile<float>(const float* Q, int64_t hd, int64_t M, const float* Kt, float* S) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4)
    for (int64_t j = 0; j < kKeyBlock; j += 16) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float* q = Q + m * hd;
      for (int64_t d = 0; d < hd; ++d) {
        const __m512 kt = _mm512_loadu_ps(Kt + d * kKeyBlock + j);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), kt, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[hd + d]), kt, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(q[2 * hd + d]), kt, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(q[3 * hd + d]), kt, a3);
      }
      _mm512_storeu_ps(S + m * kKeyBlock + j, a0);
      _mm512_storeu_ps(S + (m + 1) * kKeyBlock + j, a1);
      _mm512_storeu_ps(S + (m + 2) * kKeyBlock + j, a2);
      _mm512_storeu_ps(S + (m + 3) * kKeyBlock + j, a3);
    }
  for (; m < M; ++m)
    for (int64_t j = 0; j < kKeyBlock; j += 16) {
      __m512 a = _mm512_setzero_ps();
      for (int64_t d = 0; d < hd; ++d)
        a = _mm512_fmadd_ps(_mm512_set1_ps(Q[m * hd + d]), _mm512_loadu_ps(Kt + d * kKeyBlock + j), a);
      _mm512_storeu_ps(S + m * kKeyBlock + j, a);
    }
}

// Two queries by up to 64 columns of O in registers (width a multiple of 16, padded).
template <>
void values_tile<float>(const float* S, int64_t M, int64_t kb, const float* V, int64_t width, float* O) {
  for (int64_t c = 0; c < width; c += 64) {
    const int64_t lanes = std::min<int64_t>(4, (width - c) / 16);
    int64_t m = 0;
    for (; m < M; m += 2) {
      const bool two = m + 1 < M;
      __m512 o0[4], o1[4];
      for (int64_t l = 0; l < lanes; ++l) {
        o0[l] = _mm512_loadu_ps(O + m * width + c + 16 * l);
        o1[l] = two ? _mm512_loadu_ps(O + (m + 1) * width + c + 16 * l) : _mm512_setzero_ps();
      }
      for (int64_t j = 0; j < kb; ++j) {
        const __m512 p0 = _mm512_set1_ps(S[m * kKeyBlock + j]);
        const __m512 p1 = _mm512_set1_ps(two ? S[(m + 1) * kKeyBlock + j] : 0.0f);
        const float* vj = V + j * width + c;
        for (int64_t l = 0; l < lanes; ++l) {
          const __m512 vv = _mm512_loadu_ps(vj + 16 * l);
          o0[l] = _mm512_fmadd_ps(p0, vv, o0[l]);
          o1[l] = _mm512_fmadd_ps(p1, vv, o1[l]);
        }
      }
      for (int64_t l = 0; l < lanes; ++l) {
        _mm512_storeu_ps(O + m * width + c + 16 * l, o0[l]);
        if (two) _mm512_storeu_ps(O + (m + 1) * width + c + 16 * l, o1[l]);
      }
    }
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
  // Value and output rows padded to 16 lanes so the tiles need no ragged tail.
  const int64_t width = (hd + 15) / 16 * 16;
  thread_local std::vector<T> scratch;
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
