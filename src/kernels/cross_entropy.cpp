#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/quant.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {

int64_t count_targets(const int32_t* targets, int64_t rows, int64_t V) {
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    MOEPP_CHECK(targets[r] < V, "cross-entropy target ", targets[r], " at row ", r,
                " is outside the vocabulary [0, ", V, ")");
    n += targets[r] >= 0;
  }
  return n;
}

// log(sum(exp(x))) with the max subtracted; returns max too.
template <typename T>
T log_sum_exp(const T* x, int64_t V, T* max_out) {
  T mx = x[0];
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
  T sum = 0;
  for (int64_t j = 0; j < V; ++j) sum += std::exp(x[j] - mx);
  *max_out = mx;
  return mx + std::log(sum);
}

// d[j] = exp(x[j] - shift) * scale for j < V.
template <typename T>
void scaled_exp(const T* x, int64_t V, T shift, T scale, T* d) {
  for (int64_t j = 0; j < V; ++j) d[j] = std::exp(x[j] - shift) * scale;
}

#if defined(__AVX512F__)
// The f32 rows 16 logits at a time with exp16 (~2e-7 relative; kernels/vec_math.h): a
// training step takes two exps of every logit (vocabulary x tokens), which scalar std::exp
// made ~8% of a small model's step. The ragged tail is masked: -inf for the max, 0 for sums.
template <>
float log_sum_exp<float>(const float* x, int64_t V, float* max_out) {
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  __m512 m = lowest;
  for (int64_t j = 0; j < V; j += 16)
    m = _mm512_maskz_max_ps(__mmask16(0xFFFF), m, _mm512_mask_loadu_ps(lowest, tail_mask16(V - j), x + j));
  const float mx = reduce_max(m);
  const __m512 shift = _mm512_set1_ps(mx);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t j = 0; j < V; j += 16) {
    const __mmask16 k = tail_mask16(V - j);
    acc = _mm512_mask_add_ps(acc, k, acc, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), shift)));
  }
  *max_out = mx;
  return mx + std::log(reduce_add(acc));
}

template <>
void scaled_exp<float>(const float* x, int64_t V, float shift, float scale, float* d) {
  const __m512 s = _mm512_set1_ps(shift), c = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < V; j += 16) {
    const __mmask16 k = tail_mask16(V - j);
    _mm512_mask_storeu_ps(d + j, k, _mm512_mul_ps(exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), s)), c));
  }
}
#endif

}  // namespace

template <typename T>
double cross_entropy_forward(const T* logits, const int32_t* targets, int64_t rows, int64_t V) {
  const int64_t n = count_targets(targets, rows, V);
  if (n == 0) return 0.0;
  std::vector<double> row_loss(size_t(rows), 0.0);
  parallel_for(rows, [&](int64_t r) {
    if (targets[r] < 0) return;
    const T* x = logits + r * V;
    T mx;
    row_loss[size_t(r)] = double(log_sum_exp(x, V, &mx) - x[targets[r]]);
  }, 4);
  double total = 0;
  for (double l : row_loss) total += l;
  return total / double(n);
}

namespace {

// The loop both fused forms share: the mean loss over the counted rows, each counted row's
// gradient formed in f32 in out.row(r) and handed to out.finish(r, row); an ignored row's
// gradient is zero (out.zero(r)).
template <typename T, typename Out>
double fused_rows(const T* logits, const int32_t* targets, int64_t rows, int64_t V, T dloss, const Out& out) {
  const int64_t n = count_targets(targets, rows, V);
  std::vector<double> row_loss(size_t(rows), 0.0);
  const T scale = n ? dloss / T(n) : T(0);
  parallel_for(rows, [&](int64_t r) {
    if (targets[r] < 0) return out.zero(r);
    const T* x = logits + r * V;
    T* d = out.row(r);
    T mx;
    const T lse = log_sum_exp(x, V, &mx);
    row_loss[size_t(r)] = double(lse - x[targets[r]]);
    scaled_exp(x, V, lse, scale, d);
    d[targets[r]] -= scale;
    out.finish(r, d);
  }, 4);
  double total = 0;
  for (double l : row_loss) total += l;
  return n ? total / double(n) : 0.0;
}

// The gradient written where it is kept.
template <typename T>
struct RowsInPlace {
  T* d;
  int64_t V;
  T* row(int64_t r) const { return d + r * V; }
  void finish(int64_t, const T*) const {}
  void zero(int64_t r) const { std::fill(row(r), row(r) + V, T(0)); }
};

// Each row formed in a buffer that stays in cache, then rounded: the bits rounding the f32
// gradient gives.
struct RowsRoundedToBf16 {
  uint16_t* d;
  int64_t V;
  float* row(int64_t) const {
    thread_local std::vector<float> buffer;
    buffer.resize(size_t(V));
    return buffer.data();
  }
  void finish(int64_t r, const float* f) const { round_to_bf16(f, V, d + r * V); }
  void zero(int64_t r) const { std::fill(d + r * V, d + (r + 1) * V, uint16_t(0)); }
};

}  // namespace

template <typename T>
double cross_entropy_fused(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                           T dloss, T* dlogits) {
  return fused_rows(logits, targets, rows, V, dloss, RowsInPlace<T>{dlogits, V});
}

double cross_entropy_fused_bf16(const float* logits, const int32_t* targets, int64_t rows, int64_t V, float dloss,
                                uint16_t* dlogits) {
  return fused_rows(logits, targets, rows, V, dloss, RowsRoundedToBf16{dlogits, V});
}

template double cross_entropy_forward<float>(const float*, const int32_t*, int64_t, int64_t);
template double cross_entropy_forward<double>(const double*, const int32_t*, int64_t, int64_t);
template double cross_entropy_fused<float>(const float*, const int32_t*, int64_t, int64_t, float, float*);
template double cross_entropy_fused<double>(const double*, const int32_t*, int64_t, int64_t, double, double*);

}  // namespace moepp
