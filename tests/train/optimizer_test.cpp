// AdamW and the gradient norm against the formulas in double: three updates of every
// parameter of a tiny model (sizes that leave ragged 16-lane tails), decayed and undecayed
// tensors, a skipped tensor; the squared norm of a tensor large enough to split over threads;
// clipping applied inside the update.
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

// Clipping inside the update: reading g as grad_scale * g gives exactly the update on
// gradients scaled beforehand (the same float product), and grad_norm / clip_scale give the
// norm and factor of the formula in double.
TEST(AdamW, ClippingInTheUpdateEqualsClippingTheGradientsFirst) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 37);
  Rng rng(11);
  const auto w0 = random_params(cfg, rng, 0.1);
  auto g = random_params(cfg, rng, 1.0);
  double sq = 0;
  g.for_each(cfg, [&](const std::string&, const Tensor<float>& t) {
    for (int64_t i = 0; i < t.numel(); ++i) sq += double(t[i]) * double(t[i]);
  });
  const double norm = grad_norm(cfg, g);
  EXPECT_NEAR(norm, std::sqrt(sq), 1e-12 * std::sqrt(sq));
  const double max_norm = norm / 3;
  const float s = clip_scale(norm, max_norm);
  EXPECT_EQ(s, float(max_norm / norm));
  EXPECT_EQ(clip_scale(norm, 2 * norm), 1.0f);
  EXPECT_EQ(clip_scale(norm, 0.0), 1.0f);  // no clipping asked

  auto scaled = ModelParams<float>::zeros(cfg);
  std::vector<const Tensor<float>*> gs;
  g.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { gs.push_back(&t); });
  size_t i = 0;
  scaled.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
    for (int64_t j = 0; j < t.numel(); ++j) t[j] = (*gs[i])[j] * s;
    ++i;
  });
  auto w_fused = ModelParams<float>::zeros(cfg), w_first = ModelParams<float>::zeros(cfg);
  for (auto* w : {&w_fused, &w_first}) {
    std::vector<const Tensor<float>*> from;
    w0.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { from.push_back(&t); });
    size_t k = 0;
    w->for_each(cfg, [&](const std::string&, Tensor<float>& t) {
      std::copy(from[k]->data(), from[k]->data() + t.numel(), t.data());
      ++k;
    });
  }
  AdamW fused(cfg, AdamWConfig{}), first(cfg, AdamWConfig{});
  for (int step = 0; step < 2; ++step) {
    fused.update(cfg, w_fused, g, 1e-2, {}, nullptr, s);
    first.update(cfg, w_first, scaled, 1e-2);
  }
  std::vector<const Tensor<float>*> a, b;
  w_fused.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { a.push_back(&t); });
  w_first.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { b.push_back(&t); });
  int64_t compared = 0;
  for (size_t t = 0; t < a.size(); ++t)
    for (int64_t j = 0; j < a[t]->numel(); ++j, ++compared) ASSERT_EQ((*a[t])[j], (*b[t])[j]) << t << " " << j;
  EXPECT_EQ(compared, w0.numel(cfg));
  // The first moment after one update is (1 - beta1) * (g * s), the factor applied.
  AdamW once(cfg, AdamWConfig{});
  auto w_once = ModelParams<float>::zeros(cfg);
  once.update(cfg, w_once, g, 1e-2, {}, nullptr, s);
  std::vector<const Tensor<float>*> m1;
  once.m().for_each(cfg, [&](const std::string&, const Tensor<float>& t) { m1.push_back(&t); });
  const float c1 = 1.0f - float(AdamWConfig{}.beta1);
  for (size_t t = 0; t < m1.size(); ++t)
    for (int64_t j = 0; j < m1[t]->numel(); ++j) ASSERT_EQ((*m1[t])[j], c1 * ((*gs[t])[j] * s)) << t << " " << j;
}
