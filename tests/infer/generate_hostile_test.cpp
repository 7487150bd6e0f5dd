// Inference against bad numbers: NaN or Inf logits stop the sampler and the generator with
// an error naming the step (never a token that passes for text), a session refuses more
// positions than the model has, f32 and packed alike, in the words of model_forward, and
// a negative token count is named as such.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include "data/tokenizer.h"
#include "infer/generator.h"
#include "infer/sampler.h"
#include "infer/session.h"
#include "model/packed_model.h"
#include "model/transformer.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// A tokenizer trained once for the whole file.
const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const std::string dir = test::scratch_dir("moepp-generate-hostile");
    {
      std::ofstream out(dir + "/corpus.txt");
      for (int i = 1; i <= 400; ++i)
        out << "Line " << i << ": the quick brown fox jumps over the lazy dog number " << i % 17 << ".\n";
    }
    Tokenizer::train({dir + "/corpus.txt"}, dir + "/tokenizer.model", 400);
    return Tokenizer(dir + "/tokenizer.model");
  }();
  return tok;
}

ModelParams<float> random_params(const ModelConfig& cfg) {
  auto w = ModelParams<float>::zeros(cfg);
  Rng rng(7);
  w.init(cfg, rng);
  return w;
}

}  // namespace

TEST(SamplerHostile, RefusesNonFiniteLogitsGreedyAndSampled) {
  for (const double temperature : {0.0, 0.8}) {
    Sampler s(SamplerOptions{temperature, 40, 0.95, 1});
    const float with_nan[4] = {0.5f, kNaN, 1.0f, 0.0f};
    expect_error_mentioning([&] { s.sample(with_nan, 4); }, "sampler: the logit of token 1 is nan, not finite");
    const float with_inf[4] = {0.5f, 1.0f, 0.0f, -kInf};
    expect_error_mentioning([&] { s.sample(with_inf, 4); }, "sampler: the logit of token 3 is -inf, not finite");
    const float fine[4] = {0.5f, 3.0f, 0.0f, -1.0f};
    if (temperature == 0) EXPECT_EQ(s.sample(fine, 4), 1);
    else EXPECT_GE(s.sample(fine, 4), 0);
  }
}

TEST(SamplerHostile, RefusesNonFiniteTemperature) {
  for (const double t : {double(kNaN), double(kInf), -1.0})
    expect_error_mentioning([&] { Sampler s(SamplerOptions{t, 40, 0.95, 1}); }, "sampler: temperature");
  expect_error_mentioning([&] { Sampler s(SamplerOptions{0.8, 40, double(kNaN), 1}); }, "sampler: top-p nan");
}

TEST(SessionHostile, RefusesMorePositionsThanTheModelHasAsModelForwardDoes) {
  ModelConfig cfg = ModelConfig::preset("tiny", 64);
  cfg.max_position_embeddings = 24;
  auto w = random_params(cfg);
  const std::string words = "model: sequence of 25 tokens exceeds max_position_embeddings 24";
  std::vector<int32_t> ids(25, 3);
  ModelCache<float> cache;
  expect_error_mentioning([&] { model_forward(cfg, w, ids.data(), 1, 25, cache); }, words);
  expect_error_mentioning([&] { Session<float> s(cfg, w, 25); }, words);
  Session<float> at_limit(cfg, w, 24);  // exactly the context is fine
  Tensor<float> logits;
  at_limit.append(ids.data(), 24, logits);
  EXPECT_EQ(logits.dim(0), 24);
  for (const WeightType type : {WeightType::bf16, WeightType::q8_0, WeightType::q4}) {
    const auto packed = PackedModel::pack(cfg, random_params(cfg), type);
    expect_error_mentioning([&] { Session<float> s(*packed, 25); }, words);
    Session<float> fits(*packed, 24);
    fits.append(ids.data(), 24, logits);
    EXPECT_EQ(logits.dim(0), 24);
  }
}

// Finite weights whose logits overflow only after the prompt: the LM head is zero but for
// one entry of 1e38 (token 5, feature 0), and tokens 0 and 5 embed as 100 on feature 0.
// On the prompt the logits stay finite (the normed feature is O(1)); greedy decoding then
// picks token 0 or 5 (the only candidates when every other logit is 0), whose normed
// feature is about sqrt(hidden) = 5.7, and 5.7e38 overflows. The router's own check of
// its inputs sees nothing wrong, so the generator's check is what stops it, naming step 1
// and the position after the prompt.
TEST(GenerateHostile, NonFiniteLogitsAfterThePromptNameTheStep) {
  const Tokenizer& tok = tokenizer();
  const ModelConfig cfg = ModelConfig::preset("tiny", tok.vocab_size());
  const int64_t D = cfg.hidden_size;
  auto w = random_params(cfg);
  ASSERT_GT(w.lm_head.numel(), 0);
  std::fill(w.lm_head.data(), w.lm_head.data() + w.lm_head.numel(), 0.0f);
  w.lm_head[5 * D] = 1e38f;
  for (const int64_t t : {0, 5}) {
    std::fill(w.embed.data() + t * D, w.embed.data() + (t + 1) * D, 0.0f);
    w.embed[t * D] = 100.0f;
  }
  const std::string prompt = "Line 3";
  const auto encoded = tok.encode(prompt);
  ASSERT_EQ(std::count_if(encoded.begin(), encoded.end(), [](int32_t id) { return id == 0 || id == 5; }), 0);
  const std::string where =
      "generate: non-finite logits at step 1 (position " + std::to_string(encoded.size() + (tok.bos_id() >= 0)) + ")";
  std::string shown;
  expect_error_mentioning(
      [&] {
        generate_text(cfg, w, tok, prompt, GenerateOptions{8, SamplerOptions{0.0, 0, 1.0, 1}},
                      [&](const std::string& s) { shown += s; });
      },
      where + ": the logit of token 5 is inf");
  EXPECT_EQ(shown.rfind(prompt, 0), 0u) << shown;

  // Compact weights take the same path.
  const auto packed = PackedModel::pack(cfg, std::move(w), WeightType::bf16);
  expect_error_mentioning(
      [&] { generate_text(*packed, tok, prompt, GenerateOptions{8, SamplerOptions{0.0, 0, 1.0, 1}}); }, where);
}

TEST(GenerateHostile, NonFinitePromptLogitsStopBeforeAnyTextIsShown) {
  const Tokenizer& tok = tokenizer();
  const ModelConfig cfg = ModelConfig::preset("tiny", tok.vocab_size());
  auto w = random_params(cfg);
  w.final_norm[0] = kInf;
  bool shown = false;
  expect_error_mentioning(
      [&] { generate_text(cfg, w, tok, "Line 3", GenerateOptions{4, {}}, [&](const std::string&) { shown = true; }); },
      "generate: non-finite logits at step 0");
  EXPECT_FALSE(shown);
}

TEST(GenerateHostile, NegativeTokenCountIsNamed) {
  const Tokenizer& tok = tokenizer();
  const ModelConfig cfg = ModelConfig::preset("tiny", tok.vocab_size());
  const auto w = random_params(cfg);
  expect_error_mentioning([&] { generate_text(cfg, w, tok, "Line 3", GenerateOptions{-1, {}}); },
                          "generate: the number of tokens to generate must be 0 or more, got -1");
  EXPECT_EQ(generate_text(cfg, w, tok, "Line 3", GenerateOptions{0, {}}), "Line 3");
}
