// The whole decoder against fixtures from our independent PyTorch implementation
// (tools/reference/decoder_reference.py, float64 autograd): logits, loss and every
// gradient; and `moepp grad` writing exactly those gradients under the SPEC names.
#include <gtest/gtest.h>

#include <cstdlib>

#include "model/model_folder.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

std::string fixture(const std::string& name) {
  return std::string(MOEPP_FIXTURES_DIR) + "/decoder_" + name + ".safetensors";
}

template <typename T>
void check_against_fixture(const std::string& name, double tol) {
  const SafetensorsFile f(fixture(name));
  const ModelConfig cfg = ModelConfig::from_json(nlohmann::json::parse(f.meta("config")), fixture(name));
  auto w = ModelParams<T>::zeros(cfg);
  w.for_each(cfg, [&](const std::string& n, Tensor<T>& t) { t = f.read<T>(n); });
  const auto ids64 = f.read<int64_t>("ids");
  std::vector<int32_t> ids(ids64.data(), ids64.data() + ids64.numel());
  const auto targets = next_token_targets(ids.data(), int64_t(ids.size()));
  ModelCache<T> cache;
  model_forward(cfg, w, ids.data(), 1, int64_t(ids.size()), cache);
  SCOPED_TRACE(name);
  EXPECT_LT(rel_error(cache.logits, f.read<double>("logits")), tol) << "logits";
  auto g = ModelParams<T>::zeros(cfg);
  const LossParts p = model_backward(cfg, w, cache, targets.data(), g);
  EXPECT_NEAR(p.loss, f.read<double>("loss")[0], tol * f.read<double>("loss")[0]);
  EXPECT_NEAR(p.lm_loss, f.read<double>("lm_loss")[0], tol * f.read<double>("lm_loss")[0]);
  EXPECT_NEAR(p.balance_loss, f.read<double>("balance_loss")[0], tol * f.read<double>("balance_loss")[0]);
  int compared = 0;
  g.for_each(cfg, [&](const std::string& n, Tensor<T>& t) {
    const auto want = f.read<double>("grad." + n);
    if (want.numel() && std::all_of(want.data(), want.data() + want.numel(), [](double v) { return v == 0.0; })) {
      for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t[i], T(0)) << n;  // the first MoE layer's gate map
    } else {
      EXPECT_LT(rel_error(t, want), tol) << "grad." << n;
    }
    ++compared;
  });
  int in_fixture = 0;
  for (const auto& [k, e] : f.entries()) in_fixture += k.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, in_fixture);
}

class DecoderReference : public ::testing::TestWithParam<const char*> {};

TEST_P(DecoderReference, F64MatchesPyTorchReference) { check_against_fixture<double>(GetParam(), 1e-10); }
TEST_P(DecoderReference, F32MatchesPyTorchReference) { check_against_fixture<float>(GetParam(), 1e-5); }

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderReference, ::testing::Values("released", "interval2", "mixtral_vanilla"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// `moepp grad` on a model folder holding the fixture's parameters writes the fixture's
// loss and gradients, under exactly the SPEC tensor names.
TEST(GradCommand, WritesTheReferenceGradientsUnderSpecNames) {
  for (const char* name : {"released", "interval2"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile f(fixture(name));
    const ModelConfig cfg = ModelConfig::from_json(nlohmann::json::parse(f.meta("config")), fixture(name));
    auto w = ModelParams<float>::zeros(cfg);
    w.for_each(cfg, [&](const std::string& n, Tensor<float>& t) { t = f.read<float>(n); });
    char tmpl[] = "/tmp/moepp-grad-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    save_model_folder(dir + "/model", cfg, w);
    const auto ids = f.read<int64_t>("ids");
    std::string list;
    for (int64_t i = 0; i < ids.numel(); ++i) {
      if (i) list += ",";
      list += std::to_string(ids[i]);
    }
    const std::string out = dir + "/grad.safetensors";
    const std::string cmd = std::string(MOEPP_CLI) + " grad --threads 2 --model " + dir + "/model --ids " + list + " --out " + out;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const SafetensorsFile g(out);
    EXPECT_NEAR(g.read<double>("loss")[0], f.read<double>("loss")[0], 1e-5 * f.read<double>("loss")[0]);
    EXPECT_NEAR(g.read<double>("balance_loss")[0], f.read<double>("balance_loss")[0], 1e-5);
    size_t params = 0;
    for (const auto& [k, e] : f.entries()) {
      if (k.rfind("grad.", 0) != 0) continue;
      const std::string n = k.substr(5);
      ASSERT_TRUE(g.has(n)) << n;
      ++params;
      const auto want = f.read<double>(k);
      double norm = 0;
      for (int64_t i = 0; i < want.numel(); ++i) norm += want[i] * want[i];
      if (norm == 0) continue;
      EXPECT_LT(rel_error(g.read<double>(n), want), 1e-5) << n;
    }
    EXPECT_EQ(g.entries().size(), params + 3) << "every parameter plus loss, lm_loss and balance_loss, nothing else";
  }
}

}  // namespace
