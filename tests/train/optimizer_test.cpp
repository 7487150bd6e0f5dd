// AdamW and the gradient norm against the formulas in double: three updates of every
// parameter of a tiny model (sizes that leave ragged 16-lane tails), decayed and undecayed
// tensors, a skipped tensor; the squared norm of a tensor large enough to split over threads.
#include "train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/rng.h"

using namespace moepp;

namespace {

ModelParams<float> random_params(const ModelConfig& cfg, Rng& rng, double std) {
  auto p = ModelParams<float>::zeros(cfg);
  p.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = float(rng.normal() * std);
  });
  return p;
}

}  // namespace

TEST(AdamW, ThreeUpdatesEqualTheFormulaInDouble) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 37);
  Rng rng(9);
  auto w = random_params(cfg, rng, 0.1);
  const AdamWConfig c{0.9, 0.95, 1e-8, 0.1};
  AdamW opt(cfg, c);
  // The double reference: per element w, m, v.
  std::vector<double> rw, rm, rv;
  std::vector<std::string> names;
  w.for_each(cfg, [&](const std::string& n, Tensor<float>& t) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      rw.push_back(t[i]);
      names.push_back(n);
    }
  });
  rm.assign(rw.size(), 0.0);
  rv.assign(rw.size(), 0.0);
  const Tensor<float>* skipped = nullptr;
  w.for_each(cfg, [&](const std::string& n, const Tensor<float>& t) {
    if (n == "model.embed_tokens.weight") skipped = &t;
  });
  ASSERT_NE(skipped, nullptr);
  const double lrs[3] = {1e-2, 3e-3, 1e-3};
  for (int step = 1; step <= 3; ++step) {
    auto g = random_params(cfg, rng, 1.0);
    size_t k = 0;
    g.for_each(cfg, [&](const std::string& n, Tensor<float>& t) {
      for (int64_t i = 0; i < t.numel(); ++i, ++k) {
        if (n == "model.embed_tokens.weight") continue;
        const double gi = t[i], lr = lrs[step - 1];
        rm[k] = c.beta1 * rm[k] + (1 - c.beta1) * gi;
        rv[k] = c.beta2 * rv[k] + (1 - c.beta2) * gi * gi;
        const double mh = rm[k] / (1 - std::pow(c.beta1, step)), vh = rv[k] / (1 - std::pow(c.beta2, step));
        const double decay = decays(n) ? 1 - lr * c.weight_decay : 1.0;
        rw[k] = rw[k] * decay - lr * mh / (std::sqrt(vh) + c.eps);
      }
    });
    opt.update(cfg, w, g, lrs[step - 1], {skipped});
  }
  size_t k = 0;
  double worst = 0;
  w.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
    for (int64_t i = 0; i < t.numel(); ++i, ++k)
      worst = std::max(worst, std::abs(double(t[i]) - rw[k]) / std::max(std::abs(rw[k]), 1e-3));
  });
  EXPECT_LT(worst, 1e-5);
  // The skipped tensor and its moments were left alone.
  EXPECT_EQ(double(skipped->data()[0]), rw[0]);
  EXPECT_EQ(opt.step(), 3);
}

// With a Bf16Shadow, the update also rounds each updated weight matrix into its copy, in the
// same pass: afterwards the copies equal a fresh rounding of the new weights, bit for bit.
TEST(AdamW, RoundsTheUpdatedWeightsIntoTheShadow) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 37);
  Rng rng(10);
  auto w = random_params(cfg, rng, 0.1);
  AdamW opt(cfg, AdamWConfig{});
  std::vector<Bf16Shadow::Span> spans;
  w.for_each(cfg, [&](const std::string&, const Tensor<float>& t) {
    if (t.shape().rank() >= 2) spans.emplace_back(t.data(), t.numel());
  });
  Bf16Shadow shadow;
  shadow.refresh(spans);
  ASSERT_TRUE(shadow.holds(spans));
  auto g = random_params(cfg, rng, 1.0);
  opt.update(cfg, w, g, 1e-2, {}, &shadow);
  int64_t checked = 0;
  for (const auto& [p, n] : spans) {
    const uint16_t* bits = shadow.find(p, n);
    ASSERT_NE(bits, nullptr);
    for (int64_t i = 0; i < n; ++i, ++checked) ASSERT_EQ(bits[i], f32_to_bf16(p[i]).bits) << i;
  }
  EXPECT_EQ(checked, shadow.elements());
  spans.pop_back();
  EXPECT_FALSE(shadow.holds(spans));
}

TEST(AdamW, SquaredNormEqualsTheSumInDouble) {
  Rng rng(4);
  for (int64_t n : {int64_t(1), int64_t(15), int64_t(1000003)}) {
    Tensor<float> t({n});
    double want = 0;
    for (int64_t i = 0; i < n; ++i) {
      t[i] = float(rng.normal());
      want += double(t[i]) * double(t[i]);
    }
    EXPECT_NEAR(squared_norm(t), want, 1e-12 * want) << n;
  }
}
