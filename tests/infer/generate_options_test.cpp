// Generation options in closed form: the repeat penalty divides positive logits of recent
// tokens by the penalty and multiplies negative ones (each token once, however often it
// occurred), and leaves every other logit alone; OpenAI's presence and frequency penalties
// lower a generated token's logit once and by its count; logit biases add to a logit. And
// greedy generation over fixed logits, whose tokens these decide step by step.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "data/tokenizer.h"
#include "infer/generation.h"
#include "infer/generator.h"
#include "model/config.h"
#include "test_util.h"

using namespace moepp;

TEST(RepeatPenalty, DividesPositiveMultipliesNegativeOncePerToken) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, -4.0f, 0.0f};
  const std::vector<int32_t> recent = {0, 1, 0, 4, 0, 5};
  apply_repeat_penalty(logits.data(), int64_t(logits.size()), recent.data(), int64_t(recent.size()), 2.0);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);   // 2 / 2, not 2 / 8 for three occurrences
  EXPECT_FLOAT_EQ(logits[1], -2.0f);  // -1 * 2
  EXPECT_FLOAT_EQ(logits[2], 0.5f);   // not recent
  EXPECT_FLOAT_EQ(logits[3], 3.0f);   // not recent
  EXPECT_FLOAT_EQ(logits[4], -8.0f);  // -4 * 2
  EXPECT_FLOAT_EQ(logits[5], 0.0f);   // 0 * 2
}

TEST(RepeatPenalty, IgnoresIdsOutsideTheVocabulary) {
  std::vector<float> logits = {1.0f, 1.0f};
  const std::vector<int32_t> recent = {-1, 7, 1};
  apply_repeat_penalty(logits.data(), 2, recent.data(), 3, 4.0);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], 0.25f);
}

TEST(GeneratedPenalties, LowerATokenOnceForPresenceAndByItsCount) {
  std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> generated = {2, 0, 2, 2, 7, -1};
  apply_generated_penalties(logits.data(), 4, generated.data(), int64_t(generated.size()), 0.5, 0.25);
  EXPECT_FLOAT_EQ(logits[0], 0.25f);   // 1 - 1 x 0.25 - 0.5
  EXPECT_FLOAT_EQ(logits[1], 1.0f);    // never generated
  EXPECT_FLOAT_EQ(logits[2], -0.25f);  // 1 - 3 x 0.25 - 0.5
  EXPECT_FLOAT_EQ(logits[3], 1.0f);
}

namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const std::string dir = test::scratch_dir("moepp-generate-options");
    {
      std::ofstream out(dir + "/corpus.txt");
      for (int i = 1; i <= 200; ++i) out << "Item " << i << " is on shelf " << i % 7 << " of the store.\n";
    }
    Tokenizer::train({dir + "/corpus.txt"}, dir + "/tokenizer.model", 300);
    return Tokenizer(dir + "/tokenizer.model");
  }();
  return tok;
}

// Greedy steps over the same logits every step: A 2.0, B 1.0, C 0.7, every other token 0.
std::vector<int32_t> greedy_over_fixed_logits(const GenerateOptions& o, std::vector<TokenLogprob>* logprobs = nullptr) {
  const Tokenizer& tok = tokenizer();
  const ModelConfig cfg = ModelConfig::preset("tiny", tok.vocab_size());
  Generation gen(cfg, tok, tok.encode_prompt("Item 3"), o, logprobs ? 0 : -1);
  std::vector<float> logits(size_t(cfg.vocab_size), 0.0f);
  logits[10] = 2.0f;
  logits[11] = 1.0f;
  logits[12] = 0.7f;
  while (!gen.finished()) gen.step(logits.data());
  if (logprobs) *logprobs = gen.logprobs();
  return gen.generated();
}

GenerateOptions greedy(int n) {
  GenerateOptions o;
  o.max_tokens = n;
  o.ignore_eos = true;
  o.sampler = SamplerOptions{0.0, 0, 1.0, 1};
  return o;
}

}  // namespace

TEST(GeneratedPenalties, DecideGreedyTokensStepByStep) {
  GenerateOptions frequency = greedy(6);
  frequency.frequency_penalty = 0.4;
  // A: 2.0, 1.6, 1.2 lead; then 0.8 < B 1.0; then A 0.8 > C 0.7 > B 0.6; then C 0.7 > B 0.6 > A 0.4.
  EXPECT_EQ(greedy_over_fixed_logits(frequency), (std::vector<int32_t>{10, 10, 10, 11, 10, 12}));
  GenerateOptions presence = greedy(5);
  presence.presence_penalty = 1.5;
  // A 2.0; then A 0.5 < B 1.0; then C 0.7 leads A 0.5 and B -0.5; then A 0.5, again and again.
  EXPECT_EQ(greedy_over_fixed_logits(presence), (std::vector<int32_t>{10, 11, 12, 10, 10}));
  GenerateOptions bias = greedy(3);
  bias.logit_bias = {{10, -100.0f}, {13, 0.5f}, {12, 0.5f}};
  // A banned; C 0.7 + 0.5 = 1.2 leads B 1.0 and token 13's 0 + 0.5.
  EXPECT_EQ(greedy_over_fixed_logits(bias), (std::vector<int32_t>{12, 12, 12}));
  // The log-probabilities reported are the model's: before penalties and biases.
  std::vector<TokenLogprob> lp;
  greedy_over_fixed_logits(presence, &lp);
  ASSERT_EQ(lp.size(), 5u);
  const int64_t V = tokenizer().vocab_size();
  const double log_z = std::log(std::exp(2.0) + std::exp(1.0) + std::exp(0.7) + double(V - 3));
  EXPECT_NEAR(lp[1].logprob, 1.0 - log_z, 1e-5);  // B, as the unpenalised logits give it
  EXPECT_NEAR(lp[2].logprob, 0.7 - log_z, 1e-5);
  // Out-of-vocabulary biases are refused with the token named.
  GenerateOptions outside = greedy(1);
  outside.logit_bias = {{int32_t(V), 1.0f}};
  test::expect_error_mentioning([&] { greedy_over_fixed_logits(outside); }, "for token " + std::to_string(V));
}
