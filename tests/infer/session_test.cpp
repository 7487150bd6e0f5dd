// The KV-cache session: prefill then token-by-token decode gives the logits of one full
// forward, and the sampler's greedy and seeded behaviour and its min-p cut.
#include "infer/session.h"

#include <gtest/gtest.h>

#include <cmath>

#include "infer/sampler.h"
#include "model/transformer.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(Session, PrefillPlusDecodeEqualsOneFullForward) {
  ModelConfig cfg = ModelConfig::preset("tiny", 50);
  cfg.moe_expert_interval = 2;  // dense and MoE layers, gating residual across them
  cfg.num_hidden_layers = 4;
  cfg.initializer_range = 0.3;  // non-trivial routing
  auto w = ModelParams<double>::zeros(cfg);
  Rng rng(3);
  w.init(cfg, rng);
  std::vector<int32_t> ids = {1, 7, 33, 2, 49, 0, 18, 18, 5, 11};
  const int64_t n = int64_t(ids.size());
  ModelCache<double> full;
  model_forward(cfg, w, ids.data(), 1, n, full);
  Session<double> s(cfg, w, 16);
  Tensor<double> logits, got({n, cfg.vocab_size});
  s.append(ids.data(), 4, logits);  // prefill 4
  std::copy(logits.data(), logits.data() + 4 * cfg.vocab_size, got.data());
  for (int64_t t = 4; t < n; ++t) {  // decode one at a time
    s.append(&ids[size_t(t)], 1, logits);
    std::copy(logits.data(), logits.data() + cfg.vocab_size, got.data() + t * cfg.vocab_size);
  }
  EXPECT_LT(rel_error(got, full.logits), 1e-12);
  EXPECT_EQ(s.length(), n);
  EXPECT_THROW(s.append(ids.data(), 7, logits), Error);  // past the context of 16
}

TEST(Sampler, GreedyPicksArgmaxAndSeedsRepeat) {
  const float logits[] = {0.1f, 2.0f, 1.9f, -1.0f, 2.0f};
  Sampler greedy(SamplerOptions{0.0, 0, 1.0, 1});
  EXPECT_EQ(greedy.sample(logits, 5), 1);  // ties to the lower id
  Sampler a(SamplerOptions{1.0, 3, 0.9, 42}), b(SamplerOptions{1.0, 3, 0.9, 42});
  for (int i = 0; i < 50; ++i) {
    const int32_t x = a.sample(logits, 5);
    EXPECT_EQ(x, b.sample(logits, 5));
    EXPECT_TRUE(x == 1 || x == 2 || x == 4) << "top-3 only";
  }
  Sampler topk1(SamplerOptions{1.0, 1, 1.0, 5});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(topk1.sample(logits, 5), 1);
}

// min_p keeps the tokens at least min_p times as likely as the most likely one, at the
// sampling temperature, and samples among them in proportion to their probabilities.
TEST(Sampler, MinPKeepsTokensAtLeastThatLikelyRelativeToTheFirst) {
  // At temperature 0.5 the probabilities relative to token 0 are exp(2 * (l - 2)):
  // 1, e^-1 = 0.368, e^-2 = 0.135, e^-0.5 = 0.607, e^-4 = 0.018.
  const float logits[] = {2.0f, 1.5f, 1.0f, 1.75f, 0.0f};
  Sampler s(SamplerOptions{0.5, 0, 1.0, 7, 0.3});
  std::vector<int> count(5, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++count[size_t(s.sample(logits, 5))];
  EXPECT_EQ(count[2], 0);  // 0.135 < 0.3
  EXPECT_EQ(count[4], 0);
  const double kept = 1 + std::exp(-1.0) + std::exp(-0.5);
  const double want[] = {1 / kept, std::exp(-1.0) / kept, 0, std::exp(-0.5) / kept, 0};
  for (int t : {0, 1, 3})  // binomial standard deviations are ~0.0035 at 20000 draws
    EXPECT_NEAR(double(count[size_t(t)]) / draws, want[t], 0.015) << "token " << t;
  EXPECT_THROW(Sampler(SamplerOptions{1.0, 0, 1.0, 1, 1.5}), Error);
}
