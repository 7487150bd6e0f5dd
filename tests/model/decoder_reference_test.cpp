// The whole decoder against fixtures from our independent PyTorch implementation
// (tools/reference/decoder_reference.py, float64 autograd): logits, loss and every
// gradient; and `moepp grad` writing exactly those gradients under the SPEC names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <functional>

#include "model/model_folder.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "train/bf16_weights.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

constexpr double kBf16LogitsTol = 5e-2, kBf16LossTol = 1e-2, kBf16GradTol = 5e-2;

std::string fixture(const std::string& name) {
  return std::string(MOEPP_FIXTURES_DIR) + "/decoder_" + name + ".safetensors";
}

// A fixture's model and its one training sequence, read from its file f.
template <typename T>
struct FixtureStep {
  ModelConfig cfg;
  ModelParams<T> w;
  std::vector<int32_t> ids, targets;
};

template <typename T>
FixtureStep<T> read_fixture_step(const SafetensorsFile& f, const std::string& name) {
  FixtureStep<T> s{ModelConfig::from_json(nlohmann::json::parse(f.meta("config")), fixture(name)), {}, {}, {}};
  s.w = ModelParams<T>::zeros(s.cfg);
  s.w.for_each(s.cfg, [&](const std::string& n, Tensor<T>& t) { t = f.read<T>(n); });
  const auto ids64 = f.read<int64_t>("ids");
  s.ids.assign(ids64.data(), ids64.data() + ids64.numel());
  s.targets = next_token_targets(s.ids.data(), int64_t(s.ids.size()));
  return s;
}

template <typename T>
void check_against_fixture(const std::string& name, double tol) {
  const SafetensorsFile f(fixture(name));
  const auto [cfg, w, ids, targets] = read_fixture_step<T>(f, name);
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

// Mixed precision (train --precision bf16): the same step with every product but the
// routers' on bf16-rounded operands (f32 accumulation, f32 everything else). Rounding to
// 8 significant bits moves each product by ~2^-9 relative; the bounds below leave a few
// times the measured error and would not hold for products rounded twice or accumulated
// in bf16.
TEST_P(DecoderReference, Bf16ProductsGiveGradientsNearTheReference) {
  if (!gemm_bf16_available()) GTEST_SKIP() << "no native bf16 products on this CPU or build";
  const std::string name = GetParam();
  const SafetensorsFile f(fixture(name));
  const auto [cfg, w, ids, targets] = read_fixture_step<float>(f, name);
  Bf16Shadow shadow;
  shadow.refresh(weight_matrix_spans(cfg, w));
  ModelCache<float> cache;
  auto g = ModelParams<float>::zeros(cfg);
  LossParts p;
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16, &shadow);
    model_forward(cfg, w, ids.data(), 1, int64_t(ids.size()), cache);
    p = model_backward(cfg, w, cache, targets.data(), g);
  }
  SCOPED_TRACE(name);
  // Where rounding moves a token's router scores across a near-tie, its top-k choice flips
  // and its gradient follows another expert: the tensors it touches differ by design, and
  // so do the logits of that token and (through attention) of every later one. The f32 run
  // (same weights) finds the flips; each must sit at a tie closer than twice the largest
  // change rounding made to that token's scores.
  ModelCache<float> exact;
  model_forward(cfg, w, ids.data(), 1, int64_t(ids.size()), exact);
  int64_t flips = 0, routed = 0, first_flip = int64_t(ids.size());
  const int64_t E = cfg.moe.num_experts(), k = cfg.moe.top_k;
  for (size_t l = 0; l < exact.layers.size(); ++l) {
    const auto& r32 = exact.layers[l].moe.router;
    const auto& r16 = cache.layers[l].moe.router;
    for (int64_t t = 0; t < r32.tokens; ++t, ++routed) {
      std::vector<int32_t> a(r32.idx.begin() + t * k, r32.idx.begin() + (t + 1) * k);
      std::vector<int32_t> b(r16.idx.begin() + t * k, r16.idx.begin() + (t + 1) * k);
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      if (a == b) continue;
      ++flips;
      first_flip = std::min(first_flip, t);
      std::vector<float> s(r32.s.data() + t * E, r32.s.data() + (t + 1) * E);
      double moved = 0;
      for (int64_t e = 0; e < E; ++e) moved = std::max(moved, double(std::abs(r16.s[t * E + e] - s[size_t(e)])));
      std::sort(s.begin(), s.end(), std::greater<float>());
      EXPECT_LT(double(s[size_t(k - 1)] - s[size_t(k)]), 2 * moved) << "layer " << l << " token " << t;
    }
  }
  EXPECT_LE(flips * 10, routed) << "more than a tenth of the routing choices flipped";
  // The logits of the tokens before the first flip (all of them where none flipped), and
  // the loss where none did.
  const auto want_logits = f.read<double>("logits");
  const double logits_err = rel_error(cache.logits.data(), want_logits.data(), first_flip * cfg.vocab_size);
  if (first_flip > 0) {
    EXPECT_LT(logits_err, kBf16LogitsTol);
    EXPECT_GT(logits_err, 1e-5) << "the products were not rounded";
  }
  if (flips == 0) {
    EXPECT_NEAR(p.loss, f.read<double>("loss")[0], kBf16LossTol * f.read<double>("loss")[0]);
  }
  double worst = 0;
  g.for_each(cfg, [&](const std::string& n, Tensor<float>& t) {
    const auto want = f.read<double>("grad." + n);
    double norm = 0;
    for (int64_t i = 0; i < want.numel(); ++i) norm += want[i] * want[i];
    if (norm == 0) return;
    const double e = rel_error(t, want);
    worst = std::max(worst, e);
    if (flips == 0) {
      EXPECT_LT(e, kBf16GradTol) << "grad." << n;
    }
  });
  std::printf("bf16 products, %s: logits %.2e (%lld tokens before any flip), loss %.2e, worst gradient %.2e (relative), %lld of %lld routing "
              "choices flipped\n",
              name.c_str(), logits_err, (long long)first_flip, std::abs(p.loss - f.read<double>("loss")[0]) / f.read<double>("loss")[0], worst,
              (long long)flips, (long long)routed);
}

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
    const std::string dir = scratch_dir("moepp-grad");
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
