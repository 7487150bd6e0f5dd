// The MoE++ layer against fixtures from our independent PyTorch implementation of SPEC §2
// (tools/reference/moe_reference.py, float64 autograd): forward outputs, routing, balance
// losses, and every gradient of a 3-layer stack, in f64 and in f32.
#include <gtest/gtest.h>

#include <string>

#include "io/safetensors.h"
#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {

MoeConfig config_from(const SafetensorsFile& f) {
  auto num = [&](const char* k) { return std::stoll(f.meta(k)); };
  MoeConfig cfg;
  cfg.hidden = num("D");
  cfg.intermediate = num("I");
  cfg.num_ffn = int(num("N"));
  cfg.num_constant = int(num("C"));
  cfg.num_copy = int(num("P"));
  cfg.num_zero = int(num("Z"));
  cfg.top_k = int(num("k"));
  cfg.gate_weights = parse_gate_weights(f.meta("gate_weights"));
  cfg.two_layer_router = num("two_layer_router") != 0;
  cfg.logits_norm = num("logits_norm") != 0;
  cfg.norm_std = std::stod(f.meta("norm_std"));
  cfg.scale_inputs = num("scale_inputs") != 0;
  cfg.balance_tau = std::stod(f.meta("tau"));
  return cfg;
}

template <typename T>
void check_fixture(const std::string& name, double tol) {
  const SafetensorsFile f(std::string(MOEPP_FIXTURES_DIR) + "/moe_" + name + ".safetensors");
  const MoeConfig cfg = config_from(f);
  const int layers = int(std::stoll(f.meta("L")));
  const int64_t tokens = std::stoll(f.meta("T"));
  MoeStack<T> s(cfg, layers, tokens);
  s.beta = std::stod(f.meta("beta"));
  for (int l = 0; l < layers; ++l)
    s.params[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<T>& t) {
      t = f.read<T>("layers." + std::to_string(l) + "." + n);
    });
  s.x = f.read<T>("x");
  s.z_in = f.read<T>("z_in");
  s.dy = f.read<T>("dy");

  const double loss = s.forward();
  const SCOPED_TRACE(name);
  EXPECT_NEAR(loss, f.read<double>("loss")[0], tol * std::fabs(f.read<double>("loss")[0]));
  EXPECT_LT(rel_error(s.xs.back(), f.read<double>("out")), tol) << "out";
  for (int l = 0; l < layers; ++l) {
    const std::string L = std::to_string(l);
    const auto& c = s.caches[size_t(l)];
    EXPECT_NEAR(c.balance_loss, f.read<double>("balance_loss." + L)[0], tol) << "balance_loss." << L;
    EXPECT_LT(rel_error(c.router.z, f.read<double>("z." + L)), tol) << "z." << L;
    const auto idx = f.read<int64_t>("idx." + L);
    for (int64_t i = 0; i < idx.numel(); ++i) ASSERT_EQ(c.router.idx[size_t(i)], idx[i]) << "idx." << L << "[" << i << "]";
    EXPECT_LT(rel_error(c.router.g, f.read<double>("g." + L)), tol) << "g." << L;
  }
  Tensor<T> dx, dz_in;
  s.backward(dx, dz_in);
  EXPECT_LT(rel_error(dx, f.read<double>("grad.x")), tol) << "grad.x";
  EXPECT_LT(rel_error(dz_in, f.read<double>("grad.z_in")), tol) << "grad.z_in";
  int checked = 0;
  for (int l = 0; l < layers; ++l)
    s.grads[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<T>& g) {
      const std::string key = "grad.layers." + std::to_string(l) + "." + n;
      EXPECT_LT(rel_error(g, f.read<double>(key)), tol) << key;
      ++checked;
    });
  // every gradient in the fixture was compared
  int in_fixture = 0;
  for (const auto& [k, e] : f.entries()) in_fixture += k.rfind("grad.layers.", 0) == 0;
  EXPECT_EQ(checked, in_fixture);
}

class MoeReference : public ::testing::TestWithParam<const char*> {};

TEST_P(MoeReference, F64MatchesPyTorchReference) { check_fixture<double>(GetParam(), 1e-10); }
TEST_P(MoeReference, F32MatchesPyTorchReference) { check_fixture<float>(GetParam(), 1e-5); }

INSTANTIATE_TEST_SUITE_P(Fixtures, MoeReference,
                         ::testing::Values("official_released", "official_code_default", "mixtral",
                                           "softmax", "vanilla"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

}  // namespace
