// Bad input to the MoE++ layer: a clear moepp::Error that names the problem, never a crash.
#include <gtest/gtest.h>

#include <cmath>

#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {
MoeConfig small_config() {
  MoeConfig cfg;
  cfg.hidden = 4;
  cfg.intermediate = 3;
  cfg.num_ffn = 2;
  cfg.num_constant = 1;
  cfg.num_copy = 1;
  cfg.num_zero = 1;
  cfg.top_k = 2;
  return cfg;
}

}  // namespace

TEST(MoeBadInput, ParameterShapeMismatchNamesTheTensor) {
  const auto cfg = small_config();
  MoeStack<float> s(cfg, 1, 4);
  s.randomize(1);
  s.params[0].up[1].resize({5, 4});
  expect_error_mentioning([&] { s.forward(); }, "experts.1.up_proj.weight has shape [5, 4], expected [6, 4]");
}

TEST(MoeBadInput, TopKLargerThanThePool) {
  auto cfg = small_config();
  cfg.top_k = 6;
  expect_error_mentioning([&] { cfg.validate(); }, "top_k = 6 exceeds the number of experts E = 5");
  expect_error_mentioning([&] { MoeParams<float>::zeros(cfg); }, "top_k");
}

TEST(MoeBadInput, EmptyExpertPool) {
  MoeConfig cfg;
  cfg.hidden = 4;
  cfg.intermediate = 3;
  expect_error_mentioning([&] { cfg.validate(); }, "E = 0");
}

TEST(MoeBadInput, ZeroComputationExpertsWithoutAnyFfn) {
  MoeConfig cfg = small_config();
  cfg.num_ffn = 0;
  expect_error_mentioning([&] { cfg.validate(); }, "no FFN experts (N = 0)");
}

TEST(MoeBadInput, NaNInputIsReportedWithItsToken) {
  const auto cfg = small_config();
  MoeStack<float> s(cfg, 1, 4);
  s.randomize(2);
  s.x[2 * 4 + 1] = NAN;
  expect_error_mentioning([&] { s.forward(); }, "non-finite logit");
  expect_error_mentioning([&] { s.forward(); }, "at token 2");
}

TEST(MoeBadInput, UnknownGateWeightsName) {
  expect_error_mentioning([] { parse_gate_weights("sparsemax"); }, "\"sparsemax\"");
  EXPECT_EQ(parse_gate_weights("mixtral"), GateWeights::mixtral);
}
