// Gradient checks of the whole MoE++ layer: a stack of three layers chained by gating
// residuals, every parameter, the input and the incoming gating residual, against central
// finite differences in double precision; then the f32 path against the f64 path.
#include <gtest/gtest.h>

#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {

struct Case {
  const char* name;
  GateWeights gate;
  bool two_layer, norm, scale;
  int C, P, Z;
};

MoeConfig make_config(const Case& c) {
  MoeConfig cfg;
  cfg.hidden = 8;
  cfg.intermediate = 6;
  cfg.num_ffn = 4;
  cfg.num_constant = c.C;
  cfg.num_copy = c.P;
  cfg.num_zero = c.Z;
  cfg.top_k = 2;
  cfg.gate_weights = c.gate;
  cfg.two_layer_router = c.two_layer;
  cfg.logits_norm = c.norm;
  cfg.norm_std = 1.0;
  cfg.scale_inputs = c.scale;
  cfg.balance_tau = 0.6;
  return cfg;
}

class MoeLayerGrad : public ::testing::TestWithParam<Case> {};

TEST_P(MoeLayerGrad, EveryGradientMatchesFiniteDifferencesAndF32MatchesF64) {
  const Case c = GetParam();
  const MoeConfig cfg = make_config(c);
  MoeStack<double> s(cfg, 3, 16);
  // Every expert of the pool must receive slots in every layer, or its gradient would go
  // untested: take the first seed for which that holds.
  auto every_expert_used = [&] {
    for (int l = 0; l < s.layers; ++l)
      for (int e = 0; e < cfg.num_experts(); ++e)
        if (s.caches[size_t(l)].plan.rows(e) == 0) return false;
    return true;
  };
  ASSERT_TRUE(s.randomize_until(11, every_expert_used)) << "no seed routes slots to every expert";
  s.expect_every_gradient_matches_fd();

  // The f32 path on the same numbers stays within 1e-4 of the f64 path.
  MoeStack<float> f(cfg, 3, 16);
  for (int l = 0; l < s.layers; ++l) {
    std::vector<Tensor<double>*> src;
    s.params[size_t(l)].for_each(cfg, [&](const std::string&, Tensor<double>& t) { src.push_back(&t); });
    size_t i = 0;
    f.params[size_t(l)].for_each(cfg, [&](const std::string&, Tensor<float>& t) { t = cast<float>(*src[i++]); });
  }
  f.x = cast<float>(s.x);
  f.z_in = cast<float>(s.z_in);
  f.dy = cast<float>(s.dy);
  const double l64 = s.forward(), l32 = f.forward();
  EXPECT_NEAR(l32, l64, 1e-5 * std::fabs(l64) + 1e-6);
  EXPECT_LT(rel_error(f.xs.back(), s.xs.back()), 1e-5);
  Tensor<double> dx, dz_in;
  s.backward(dx, dz_in);
  Tensor<float> dxf, dzf;
  f.backward(dxf, dzf);
  EXPECT_LT(rel_error(dxf, dx), 1e-4);
  EXPECT_LT(rel_error(dzf, dz_in), 1e-4);
  for (int l = 0; l < s.layers; ++l) {
    std::vector<std::pair<std::string, Tensor<double>*>> gd;
    s.grads[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<double>& t) { gd.emplace_back(n, &t); });
    size_t i = 0;
    f.grads[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<float>& t) {
      EXPECT_LT(rel_error(t, *gd[i].second), 1e-4) << "f32 grad layer " << l << " " << n;
      ++i;
    });
  }
}

// With many tokens (16 and more) the backward's token loop is split over the threads and
// each constant expert's vector and mixer gradients are summed per thread: still the
// finite differences, on one layer of 96 tokens where each constant expert gets dozens of
// slots.
TEST(MoeLayerGradThreads, ConstantExpertsSplitOverThreadsMatchFiniteDifferences) {
  Case c{"constants", GateWeights::official, false, true, false, 2, 0, 0};
  MoeConfig cfg = make_config(c);
  cfg.num_ffn = 2;
  MoeStack<double> s(cfg, 1, 96);
  s.randomize(5);
  s.forward();
  for (int e = cfg.num_ffn; e < cfg.num_experts(); ++e)
    ASSERT_GE(s.caches[0].plan.rows(e), 16) << "constant expert " << e << " gets too few slots to split";
  Tensor<double> dx, dz_in;
  s.backward(dx, dz_in);
  s.expect_fd("x", s.x.data(), dx.data(), dx.numel());
  for (int ci = 0; ci < cfg.num_constant; ++ci) {
    const std::string n = std::to_string(ci);
    s.expect_fd("constant " + n, s.params[0].constant[size_t(ci)].data(), s.grads[0].constant[size_t(ci)].data(),
                cfg.hidden);
    s.expect_fd("constant_wg " + n, s.params[0].constant_wg[size_t(ci)].data(),
                s.grads[0].constant_wg[size_t(ci)].data(), 2 * cfg.hidden);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, MoeLayerGrad,
    ::testing::Values(
        Case{"official_released", GateWeights::official, false, true, false, 2, 1, 1},
        Case{"official_code_default", GateWeights::official, true, false, true, 2, 1, 1},
        Case{"official_norm_scaled", GateWeights::official, false, true, true, 2, 1, 1},
        Case{"mixtral", GateWeights::mixtral, false, false, false, 2, 1, 1},
        Case{"mixtral_two_layer_norm", GateWeights::mixtral, true, true, false, 2, 1, 1},
        Case{"softmax_norm_scaled", GateWeights::softmax, false, true, true, 2, 1, 1},
        Case{"softmax_two_layer", GateWeights::softmax, true, false, false, 2, 1, 1},
        Case{"vanilla", GateWeights::official, false, false, true, 0, 0, 0}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
