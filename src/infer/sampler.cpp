#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace moepp {

Sampler::Sampler(SamplerOptions o) : opt_(o), rng_(o.seed) {
  MOEPP_CHECK(std::isfinite(o.temperature) && o.temperature >= 0, "sampler: temperature ", o.temperature,
              " must be a finite number, 0 or more");
  MOEPP_CHECK(o.top_p > 0 && o.top_p <= 1, "sampler: top-p ", o.top_p, " must be in (0, 1]");
  MOEPP_CHECK(o.top_k >= 0, "sampler: top-k ", o.top_k, " must be non-negative");
  MOEPP_CHECK(o.min_p >= 0 && o.min_p <= 1, "sampler: min-p ", o.min_p, " must be in [0, 1]");
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  MOEPP_CHECK(V >= 1, "sampler: no logits to sample from");
  // NaN breaks the ordering the sort and argmax rely on; Inf turns the softmax into NaN.
  for (int64_t v = 0; v < V; ++v)
    MOEPP_CHECK(std::isfinite(logits[v]), "sampler: the logit of token ", v, " is ", logits[v], ", not finite");
  if (opt_.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = opt_.top_k > 0 ? std::min<int64_t>(opt_.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  idx.resize(size_t(k));
  std::vector<double> p(static_cast<size_t>(k));
  const double mx = logits[idx[0]];
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += (p[size_t(i)] = std::exp((logits[idx[size_t(i)]] - mx) / opt_.temperature));
  double cum = 0;
  int64_t keep = k;
  for (int64_t i = 0; i < k; ++i) {
    cum += p[size_t(i)] / sum;
    if (cum >= opt_.top_p) {
      keep = i + 1;
      break;
    }
  }
  // p[0], the most likely token's, is exp(0) = 1: min_p compares with p itself.
  while (keep > 1 && p[size_t(keep - 1)] < opt_.min_p) --keep;
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[size_t(i)];
  double u = rng_.uniform() * total;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[size_t(i)];
    if (u <= 0) return idx[size_t(i)];
  }
  return idx[size_t(keep - 1)];
}

}  // namespace moepp
