// Router behaviour on hand-made logits: an identity router (Wg = I, D = E) makes x the
// logits, so the expected gates follow from SPEC §2.2 by hand.
#include "moe/router.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(TopK, TiesGoToTheLowerIndex) {
  int32_t out[3];
  const double a[] = {1, 3, 3, 2};
  top_k_row(a, 4, 2, out);
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 2);
  const float b[] = {5, 5, 5};
  top_k_row(b, 3, 3, out);
  EXPECT_EQ(out[0], 0);
  EXPECT_EQ(out[1], 1);
  EXPECT_EQ(out[2], 2);
  const double c[] = {0, -1, 4, 4, 9};
  top_k_row(c, 5, 3, out);
  EXPECT_EQ(out[0], 4);
  EXPECT_EQ(out[1], 2);
  EXPECT_EQ(out[2], 3);
}

namespace {
// N = 2 FFN, 1 copy, 1 zero; identity router.
MoeConfig identity_config(GateWeights g) {
  MoeConfig cfg;
  cfg.hidden = 4;
  cfg.intermediate = 2;
  cfg.num_ffn = 2;
  cfg.num_copy = 1;
  cfg.num_zero = 1;
  cfg.top_k = 2;
  cfg.gate_weights = g;
  return cfg;
}

MoeParams<double> identity_router(const MoeConfig& cfg) {
  auto p = MoeParams<double>::zeros(cfg);
  for (int e = 0; e < 4; ++e) p.wg[e * 4 + e] = 1.0;
  return p;
}

double sm(const std::vector<double>& z, int i) {
  double s = 0;
  for (double v : z) s += std::exp(v);
  return std::exp(z[size_t(i)]) / s;
}
}  // namespace

TEST(Router, OfficialGatesDropZeroExpertsAndRenormalise) {
  const auto cfg = identity_config(GateWeights::official);
  auto w = identity_router(cfg);
  // token 0: top-2 = {zero expert 3, FFN 0} -> g = {0, 1}
  // token 1: top-2 = {FFN 1, copy 2}        -> g = p / (p1 + p2)
  // token 2: top-2 = {zero 3, ...} both zero-ish: {3, 1}: g = {0, 1}
  std::vector<double> x = {1, 0, -1, 2, 0.5, 2, 1, -3, 0, 1, -2, 3};
  RouterCache<double> c;
  router_forward<double>(cfg, w, x.data(), 3, nullptr, c);
  EXPECT_EQ(c.idx[0], 3);
  EXPECT_EQ(c.idx[1], 0);
  EXPECT_EQ(c.g[0], 0.0);
  EXPECT_DOUBLE_EQ(c.g[1], 1.0);
  EXPECT_EQ(c.idx[2], 1);
  EXPECT_EQ(c.idx[3], 2);
  const std::vector<double> z1 = {0.5, 2, 1, -3};
  const double p1 = sm(z1, 1), p2 = sm(z1, 2);
  EXPECT_NEAR(c.g[2], p1 / (p1 + p2), 1e-15);
  EXPECT_NEAR(c.g[3], p2 / (p1 + p2), 1e-15);
  EXPECT_NEAR(c.p[4 + 1], p1, 1e-15);
}

TEST(Router, MixtralSoftmaxesTheTopKLogitsAndSoftmaxModeKeepsP) {
  std::vector<double> x = {0.5, 2, 1, -3};
  const std::vector<double> z = x;
  {
    const auto cfg = identity_config(GateWeights::mixtral);
    auto w = identity_router(cfg);
    RouterCache<double> c;
    router_forward<double>(cfg, w, x.data(), 1, nullptr, c);
    EXPECT_NEAR(c.g[0], 1 / (1 + std::exp(-1.0)), 1e-15);  // softmax([2, 1])
    EXPECT_NEAR(c.g[1], 1 / (1 + std::exp(1.0)), 1e-15);
  }
  {
    const auto cfg = identity_config(GateWeights::softmax);
    auto w = identity_router(cfg);
    RouterCache<double> c;
    router_forward<double>(cfg, w, x.data(), 1, nullptr, c);
    EXPECT_NEAR(c.g[0], sm(z, 1), 1e-15);
    EXPECT_NEAR(c.g[1], sm(z, 2), 1e-15);
  }
}

TEST(Router, GatingResidualAndLogitNormFollowTheSpec) {
  auto cfg = identity_config(GateWeights::softmax);
  cfg.logits_norm = true;
  cfg.norm_std = 0.5;
  auto w = identity_router(cfg);
  for (int i = 0; i < 16; ++i) w.gate_map[i] = 0.1 * (i % 5) - 0.2;
  std::vector<double> x = {0.5, 2, 1, -3}, zp = {1, -1, 0.5, 2};
  RouterCache<double> c;
  router_forward(cfg, w, x.data(), 1, zp.data(), c);
  std::vector<double> z(4);
  double mean = 0;
  for (int i = 0; i < 4; ++i) {
    z[size_t(i)] = x[size_t(i)];
    for (int j = 0; j < 4; ++j) z[size_t(i)] += w.gate_map[i * 4 + j] * zp[size_t(j)];
    EXPECT_NEAR(c.z[i], z[size_t(i)], 1e-15) << "z is stored after the residual, before the norm";
    mean += z[size_t(i)] / 4;
  }
  double var = 0;
  for (double v : z) var += (v - mean) * (v - mean) / 3;  // unbiased
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c.s[i], z[size_t(i)] / (std::sqrt(var) / 0.5), 1e-14);
}
