#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/attention_backward_tiles.h"
#include "kernels/attention_bf16.h"
#include "kernels/attention_group.h"
#include "kernels/attention_forward_tiles.h"
#include "kernels/attention_runs.h"
#include "kernels/attention_tiles.h"
#include "kernels/dot.h"
#include "kernels/softmax.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {
constexpr int64_t kMaxGroup = 64;  // query heads per kv head
constexpr int64_t kMinRunRows = 4;  // shorter runs of one sequence's rows attend row by row

void check_shape(const AttentionShape& s) {
  MOEPP_CHECK(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
              "attention: q_heads ", s.q_heads, " is not a multiple of kv_heads ", s.kv_heads);
}

// The G query heads of one kv head, for one row, against L positions of history:
//   s[g][j] = q_g . k_j * scale;  p[g] = softmax(s[g]);  out_g = sum_j p[g][j] v_j
// Keys and values are read once for the whole group. score[g]: G rows of at least L.
// Each row is asked for kPrefetchRows rows ahead (prefetch_row, kernels/attention_group.h).
constexpr int64_t kPrefetchRows = 6;

// q . k and o += p v for a key or value row stored as T or as bf16 bits (widened as read).
template <typename T>
T dot_key(const T* q, const T* k, int64_t hd) {
  return dot<T, T>(q, k, hd);
}
float dot_key(const float* q, const uint16_t* k, int64_t hd) {
  int64_t d = 0;
  float sum = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (; d + 16 <= hd; d += 16)
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d),
                          widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + d))), acc);
  sum = reduce_add(acc);
#endif
  for (; d < hd; ++d) sum += q[d] * bf16_to_f32(bf16{k[d]});
  return sum;
}

template <typename T>
void add_scaled_value(T p, const T* v, T* o, int64_t hd) {
#pragma omp simd
  for (int64_t d = 0; d < hd; ++d) o[d] += p * v[d];
}
void add_scaled_value(float p, const uint16_t* v, float* o, int64_t hd) {
  int64_t d = 0;
#if defined(__AVX512F__)
  const __m512 pv = _mm512_set1_ps(p);
  for (; d + 16 <= hd; d += 16)
    _mm512_storeu_ps(o + d, _mm512_fmadd_ps(pv, widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + d))),
                                            _mm512_loadu_ps(o + d)));
#endif
  for (; d < hd; ++d) o[d] += p * bf16_to_f32(bf16{v[d]});
}

template <typename T, typename KV>
void attend_group(const T* q, int64_t G, int64_t hd, const KV* k, const KV* v, int64_t stride, int64_t L, T scale,
                  T* const* score, T* out) {
  for (int64_t j = 0; j < L; ++j) {
    const KV* kj = k + j * stride;
    if (j + kPrefetchRows < L) prefetch_row(kj + kPrefetchRows * stride, hd * int64_t(sizeof(KV)));
    for (int64_t g = 0; g < G; ++g) score[g][j] = dot_key(q + g * hd, kj, hd) * scale;
  }
  for (int64_t g = 0; g < G; ++g) softmax_in_place(score[g], L);
  std::fill(out, out + G * hd, T(0));
  for (int64_t j = 0; j < L; ++j) {
    const KV* vj = v + j * stride;
    if (j + kPrefetchRows < L) prefetch_row(vj + kPrefetchRows * stride, hd * int64_t(sizeof(KV)));
    for (int64_t g = 0; g < G; ++g) add_scaled_value(score[g][j], vj, out + g * hd, hd);
  }
}

// The training rows' softmax, row by row (f64, and f32 without AVX-512). The forward and
// the backward's recomputation take every step alike, so they agree bit for bit.
// Scores of query row qi over keys 0 .. n-1 (rows ldk apart): s_j = (qi . k_j) scale.
template <typename T>
void row_scores(const T* qi, const T* K, int64_t ldk, int64_t n, int64_t hd, T scale, T* s) {
  for (int64_t j = 0; j < n; ++j) s[j] = dot<T, T>(qi, K + j * ldk, hd) * scale;
}

// s_j -> exp(s_j - max) in place; returns their sum.
template <typename T>
T exponentials(T* s, int64_t n, T max) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - max));
  return sum;
}

template <typename T>
void scale_in_place(T* s, int64_t n, T factor) {
  for (int64_t j = 0; j < n; ++j) s[j] *= factor;
}

}  // namespace

template <typename T>
void attention_rows_forward(const T* q, const AttentionRows<T>& a, T* out) {
  check_shape(AttentionShape{1, 1, a.q_heads, a.kv_heads, a.head_dim});
  const int64_t Hq = a.q_heads, Hkv = a.kv_heads, hd = a.head_dim, G = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(hd));
  for (int64_t r = 0; r < a.rows; ++r)
    MOEPP_CHECK(a.context[r] >= 1, "attention: row ", r, " attends ", a.context[r], " positions");
  MOEPP_CHECK(G <= kMaxGroup, "attention: ", G, " query heads per kv head (at most ", kMaxGroup, ")");
  MOEPP_CHECK(!a.keys_bf16 || (std::is_same_v<T, float> && a.values_bf16),
              "attention: bf16 histories need f32 rows and bf16 values too");
  // Consecutive rows of one sequence (a prompt chunk: same history, positions one apart)
  // go through attend_run in blocks; the rest row by row.
  struct Task {
    int64_t row, rows, kv_head, cost;
  };
  // Reused across calls (no allocation per decode step). Named through a reference: inside
  // the workers the thread_local's own name would be their (empty) lists.
  thread_local std::vector<Task> task_list;
  std::vector<Task>& tasks = task_list;
  tasks.clear();
  const int64_t block_rows = std::max<int64_t>(1, kRunBlockQueries / G);
  // Where kv head g of row r's history starts, from the row's keys (and values).
  const auto head_offset = [&](int64_t r, int64_t g) { return g * (a.head_strides ? a.head_strides[r] : hd); };
  auto same_history = [&](int64_t r) {
    return a.context[r] == a.context[r - 1] + 1 && head_offset(r, 1) == head_offset(r - 1, 1) &&
           (a.keys_bf16 ? a.keys_bf16[r] == a.keys_bf16[r - 1] && a.values_bf16[r] == a.values_bf16[r - 1]
                        : a.keys[r] == a.keys[r - 1] && a.values[r] == a.values[r - 1]);
  };
  for (int64_t r = 0; r < a.rows;) {
    int64_t end = r + 1;
    while (end < a.rows && same_history(end)) ++end;
    const bool blocked = end - r >= kMinRunRows;
    for (int64_t r0 = r; r0 < end; r0 += blocked ? block_rows : 1) {
      const int64_t n = blocked ? std::min(block_rows, end - r0) : 1;
      for (int64_t kvh = 0; kvh < Hkv; ++kvh) tasks.push_back({r0, n, kvh, n * a.context[r0 + n - 1]});
    }
    r = end;
  }
  // The costliest first, so that the dynamic schedule ends with small tasks on both threads.
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& x, const Task& y) { return x.cost > y.cost; });
  // fn(keys, values) over kv head kvh of row r's history, as stored (T, or bf16 bits).
  const auto with_history = [&](int64_t r, int64_t kvh, const auto& fn) {
    const int64_t at = head_offset(r, kvh);
    if constexpr (std::is_same_v<T, float>) {
      if (a.keys_bf16) return fn(a.keys_bf16[r] + at, a.values_bf16[r] + at);
    }
    fn(a.keys[r] + at, a.values[r] + at);
  };
  parallel_for_dynamic(int64_t(tasks.size()), [&](int64_t t) {
    const Task task = tasks[size_t(t)];
    const int64_t r = task.row, kvh = task.kv_head, L = a.context[r];
    const T* qr = q + (r * Hq + kvh * G) * hd;
    T* o = out + (r * Hq + kvh * G) * hd;
    if (task.rows > 1) {
      with_history(r, kvh, [&](const auto* k, const auto* v) {
        attend_run(qr, Hq * hd, task.rows, G, hd, k, v, a.kv_stride, L, scale, o);
      });
      return;
    }
    T* score[kMaxGroup];
    thread_local AlignedVector<T> scratch;
    if (scratch.size() < size_t(G * L)) scratch.resize(size_t(G * L));
    for (int64_t g = 0; g < G; ++g) score[g] = scratch.data() + g * L;
    with_history(r, kvh, [&](const auto* k, const auto* v) {
      if constexpr (std::is_same_v<T, float>) {
        if (group_attention_vectorised(hd)) return attend_group_vectorised(qr, G, hd, k, v, a.kv_stride, L, scale, score, o);
      }
      attend_group(qr, G, hd, k, v, a.kv_stride, L, scale, score, o);
    });
  });
}

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* stats, const AttentionShape& s) {
  check_shape(s);
  if constexpr (std::is_same_v<T, float>) {
    if (attention_in_tiles())
      return attention_forward_tiles(q, k, v, out, stats, s, attention_products_bf16(s.head_dim));
  }
  // Row by row (f64, and f32 without AVX-512): one task per (sequence, q head).
  const int64_t Tn = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim, G = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(hd));
  parallel_for(s.batch * Hq, [&](int64_t bh) {
    const int64_t b = bh / Hq, h = bh % Hq;
    const T* K = k + (b * Tn * Hkv + h / G) * hd;
    const T* V = v + (b * Tn * Hkv + h / G) * hd;
    T* row_max = softmax_max(stats, b, h, s);
    T* row_inverse = softmax_inverse(stats, b, h, s);
    std::vector<T> p(static_cast<size_t>(Tn));
    for (int64_t i = 0; i < Tn; ++i) {
      const T* qi = q + ((b * Tn + i) * Hq + h) * hd;
      row_scores(qi, K, Hkv * hd, i + 1, hd, scale, p.data());
      row_max[i] = *std::max_element(p.begin(), p.begin() + i + 1);
      row_inverse[i] = T(1) / exponentials(p.data(), i + 1, row_max[i]);
      scale_in_place(p.data(), i + 1, row_inverse[i]);
      T* o = out + ((b * Tn + i) * Hq + h) * hd;
      std::fill(o, o + hd, T(0));
      for (int64_t j = 0; j <= i; ++j) add_scaled_value(p[size_t(j)], V + j * Hkv * hd, o, hd);
    }
  });
}

template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* stats, const T* dout, T* dq, T* dk, T* dv,
                        const AttentionShape& s) {
  check_shape(s);
  const int64_t Tn = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim;
  const int64_t group = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(hd));
  // One task per (batch, kv head): every q head of the group writes the same dk/dv rows.
  if constexpr (std::is_same_v<T, float>) {
    if (attention_products_bf16(hd)) return attention_backward_bf16(q, k, v, stats, dout, dq, dk, dv, s);
    if (attention_in_tiles()) {
      parallel_for(s.batch * Hkv, [&](int64_t bk) {
        attention_backward_tiles(q, k, v, stats, dout, dq, dk, dv, s, bk / Hkv, bk % Hkv);
      });
      return;
    }
  }
  parallel_for(s.batch * Hkv, [&](int64_t bk) {
    const int64_t b = bk / Hkv, kvh = bk % Hkv;
    const T* K = k + (b * Tn * Hkv + kvh) * hd;
    std::vector<T> P(static_cast<size_t>(Tn)), dS(static_cast<size_t>(Tn));
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const T* row_max = softmax_max(stats, b, h, s);
      const T* row_inverse = softmax_inverse(stats, b, h, s);
      for (int64_t i = 0; i < Tn; ++i) {
        const T* doi = dout + ((b * Tn + i) * Hq + h) * hd;
        const T* qi = q + ((b * Tn + i) * Hq + h) * hd;
        T* dqi = dq + ((b * Tn + i) * Hq + h) * hd;
        row_scores(qi, K, Hkv * hd, i + 1, hd, scale, P.data());
        exponentials(P.data(), i + 1, row_max[i]);
        scale_in_place(P.data(), i + 1, row_inverse[i]);
        T dot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const T* vj = v + ((b * Tn + j) * Hkv + kvh) * hd;
          T* dvj = dv + ((b * Tn + j) * Hkv + kvh) * hd;
          T dp = 0;
          const T pij = P[size_t(j)];
#pragma omp simd reduction(+ : dp)
          for (int64_t d = 0; d < hd; ++d) {
            dp += doi[d] * vj[d];
            dvj[d] += pij * doi[d];
          }
          dS[size_t(j)] = dp;
          dot += pij * dp;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const T ds = P[size_t(j)] * (dS[size_t(j)] - dot) * scale;
          const T* kj = k + ((b * Tn + j) * Hkv + kvh) * hd;
          T* dkj = dk + ((b * Tn + j) * Hkv + kvh) * hd;
#pragma omp simd
          for (int64_t d = 0; d < hd; ++d) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
          }
        }
      }
    }
  });
}

template void attention_rows_forward<float>(const float*, const AttentionRows<float>&, float*);
template void attention_rows_forward<double>(const double*, const AttentionRows<double>&, double*);
template void attention_forward<float>(const float*, const float*, const float*, float*, float*, const AttentionShape&);
template void attention_forward<double>(const double*, const double*, const double*, double*, double*, const AttentionShape&);
template void attention_backward<float>(const float*, const float*, const float*, const float*, const float*, float*, float*, float*, const AttentionShape&);
template void attention_backward<double>(const double*, const double*, const double*, const double*, const double*, double*, double*, double*, const AttentionShape&);

}  // namespace moepp
