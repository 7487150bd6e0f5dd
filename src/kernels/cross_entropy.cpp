#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

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

template <typename T>
double cross_entropy_fused(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                           T dloss, T* dlogits) {
  const int64_t n = count_targets(targets, rows, V);
  std::vector<double> row_loss(size_t(rows), 0.0);
  const T scale = n ? dloss / T(n) : T(0);
  parallel_for(rows, [&](int64_t r) {
    const T* x = logits + r * V;
    T* d = dlogits + r * V;
    if (targets[r] < 0) {
      std::fill(d, d + V, T(0));
      return;
    }
    T mx;
    const T lse = log_sum_exp(x, V, &mx);
    row_loss[size_t(r)] = double(lse - x[targets[r]]);
    for (int64_t j = 0; j < V; ++j) d[j] = std::exp(x[j] - lse) * scale;
    d[targets[r]] -= scale;
  }, 4);
  double total = 0;
  for (double l : row_loss) total += l;
  return n ? total / double(n) : 0.0;
}

template double cross_entropy_forward<float>(const float*, const int32_t*, int64_t, int64_t);
template double cross_entropy_forward<double>(const double*, const int32_t*, int64_t, int64_t);
template double cross_entropy_fused<float>(const float*, const int32_t*, int64_t, int64_t, float, float*);
template double cross_entropy_fused<double>(const double*, const int32_t*, int64_t, int64_t, double, double*);

}  // namespace moepp
