// Generation: what happens to one sequence between two decoder steps, whoever runs the
// decoder (the one-sequence generator, or the server's batch of many). Given the logits of
// the sequence's last position it applies the penalties and logit biases, samples, and
// keeps the text:
// pieces decoded together with the prompt so leading spaces survive (incrementally: a
// token's cost does not grow with the text, infer/detokenizer.h), text that could start
// a stop string held back until the next tokens decide, and why generation ended (a token
// limit, EOS, a stop string, the context). It runs no model and owns no cache.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "infer/detokenizer.h"
#include "infer/generator.h"
#include "model/config.h"

namespace moepp {

// A generated token with its log-probability (log-softmax of the model's logits, before the
// penalties, biases and temperature) and, when asked for, the most likely alternatives.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

// log-softmax of one row at `id`, and the `k` most likely ids with theirs (ties: lower id).
TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t id, int k);

class Generation {
 public:
  // prompt: the ids the decoder is fed first (BOS included where wanted). Checks the
  // options (max_tokens, context, repeat penalty, stop strings) and that the prompt
  // leaves room for a token, as generate_text does.
  Generation(const ModelConfig& cfg, const Tokenizer& tok, std::vector<int32_t> prompt, const GenerateOptions& opt,
             int top_logprobs = -1);

  // Positions the sequence's KV cache needs: the prompt plus max_tokens, within the context.
  int64_t capacity() const { return context_; }
  const std::vector<int32_t>& prompt() const { return prompt_; }
  const std::string& prompt_text() const { return prompt_text_; }

  // After the decoder ran the sequence's last token: samples the next one from `logits`
  // (that position's row) and returns it; nullopt when it was EOS or completed a stop
  // string. Feed it to the decoder to go on unless finished() (the token limit or the
  // context was reached with it). Throws on non-finite logits.
  std::optional<int32_t> step(const float* logits);
  bool finished() const { return finished_; }
  // Ends the generation where it is (a cancelled request): the held-back text is dropped.
  void cancel();

  // Text that became safe to show since the last call (all of it once finished).
  std::string take_text();
  const std::string& continuation() const { return continuation_; }
  const std::vector<int32_t>& generated() const { return generated_; }
  // The log-probabilities of the generated tokens (top_logprobs >= 0 in the constructor).
  const std::vector<TokenLogprob>& logprobs() const { return logprobs_; }
  const GenerateStats& stats() const { return stats_; }

 private:
  const ModelConfig& cfg_;
  const Tokenizer& tok_;
  GenerateOptions opt_;
  std::vector<int32_t> prompt_, ids_, generated_;
  Detokenizer text_;  // the prompt's text ids (BOS left out) and the generated ones
  std::string prompt_text_, continuation_;
  size_t shown_ = 0, safe_ = 0;
  int64_t context_ = 0;
  int top_logprobs_ = -1;
  bool finished_ = false;
  bool prompt_intact_ = true;  // the text still starts with prompt_text_
  Sampler sampler_;
  std::vector<float> row_;
  std::vector<TokenLogprob> logprobs_;
  GenerateStats stats_;
};

}  // namespace moepp
