#include "moe/balance_loss.h"

#include "core/parallel.h"

namespace moepp {

template <typename T>
void balance_loss_sums(const MoeConfig& cfg, const T* p, const int32_t* idx, int64_t tokens,
                       std::vector<double>& sums) {
  const int E = cfg.num_experts(), k = cfg.top_k;
  sums.assign(size_t(2 * E + 1), 0.0);
  double* chosen = sums.data();
  double* P = sums.data() + E;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) chosen[idx[t * k + j]] += 1.0;
    for (int e = 0; e < E; ++e) P[e] += double(p[t * E + e]);
  }
  sums[size_t(2 * E)] = double(tokens);
}

double balance_loss_from_sums(const MoeConfig& cfg, const std::vector<double>& sums, std::vector<double>& f) {
  const int E = cfg.num_experts();
  const double tokens = sums[size_t(2 * E)];
  f.assign(size_t(E), 0.0);
  if (tokens == 0) return 0.0;
  double loss = 0;
  for (int e = 0; e < E; ++e) {
    f[size_t(e)] = sums[size_t(e)] / tokens;
    loss += cfg.eta(e) * f[size_t(e)] * sums[size_t(E + e)] / tokens;
  }
  return loss;
}

template <typename T>
double balance_loss_forward(const MoeConfig& cfg, const T* p, const int32_t* idx,
                            int64_t tokens, std::vector<double>& f) {
  std::vector<double> sums;
  balance_loss_sums(cfg, p, idx, tokens, sums);
  return balance_loss_from_sums(cfg, sums, f);
}

template <typename T>
void balance_loss_backward(const MoeConfig& cfg, const std::vector<double>& f, int64_t rows, int64_t tokens,
                           double dloss, T* dp) {
  const int E = cfg.num_experts();
  if (tokens == 0) return;
  std::vector<T> coef(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) coef[size_t(e)] = T(dloss * cfg.eta(e) * f[size_t(e)] / double(tokens));
  parallel_for(rows, [&](int64_t t) {
    for (int e = 0; e < E; ++e) dp[t * E + e] += coef[size_t(e)];
  }, 256);
}

template double balance_loss_forward<float>(const MoeConfig&, const float*, const int32_t*, int64_t, std::vector<double>&);
template double balance_loss_forward<double>(const MoeConfig&, const double*, const int32_t*, int64_t, std::vector<double>&);
template void balance_loss_sums<float>(const MoeConfig&, const float*, const int32_t*, int64_t, std::vector<double>&);
template void balance_loss_sums<double>(const MoeConfig&, const double*, const int32_t*, int64_t, std::vector<double>&);
template void balance_loss_backward<float>(const MoeConfig&, const std::vector<double>&, int64_t, int64_t, double, float*);
template void balance_loss_backward<double>(const MoeConfig&, const std::vector<double>&, int64_t, int64_t, double, double*);

}  // namespace moepp
