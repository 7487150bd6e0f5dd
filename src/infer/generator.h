// Generator: text in, text out. Encodes the prompt (with BOS), prefills a Session, samples
// up to max_tokens (stopping at EOS or the context), and reports text as it grows: pieces
// are decoded together with the prompt so that leading spaces survive. Non-finite logits
// stop generation with a moepp::Error naming the step.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "infer/sampler.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/packed_model.h"
#include "model/params.h"
#include "moe/routing_stats.h"

namespace moepp {

// What a generation did, for the timing line and the notices of `moepp generate`.
struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0, context = 0;
  double prompt_seconds = 0, generate_seconds = 0;
  enum class Stop { limit, eos, stop_string, context } stopped = Stop::limit;
};

struct GenerateOptions {
  int max_tokens = 128;
  SamplerOptions sampler;
  // Positions the session holds (prompt + continuation), at most max_position_embeddings;
  // 0: the model's max_position_embeddings.
  int64_t context = 0;
  // The KV cache's element type; unset: default_kv_dtype of the weights (model/kv_cache.h).
  std::optional<KvDtype> kv_dtype = std::nullopt;
  // Generation ends before the first of these strings the continuation contains; the
  // string itself is not shown (text that could start one is held back until it is known).
  std::vector<std::string> stop = {};
  // Logits of tokens among the last repeat_last_n of the sequence are divided by the
  // penalty when positive and multiplied by it when negative (1: off).
  double repeat_penalty = 1.0;
  int repeat_last_n = 64;
  // OpenAI's penalties, over the tokens generated so far (not the prompt): the logit of a
  // token generated c times is lowered by c * frequency_penalty + (c > 0) * presence_penalty
  // (negative values favour repeats). 0: off.
  double presence_penalty = 0, frequency_penalty = 0;
  // Added to these tokens' logits at every step (OpenAI's logit_bias; -100 bans a token in
  // practice, 100 all but forces it).
  std::vector<std::pair<int32_t, float>> logit_bias = {};
  bool ignore_eos = false;         // EOS is a token like any other (benchmarks: fixed lengths)
  GenerateStats* stats = nullptr;  // filled when set
  // When set, receives the routing statistics of every token run (the prompt and the
  // generated tokens), pooled per MoE layer (the C API's moepp_routing after moepp_generate).
  std::vector<RoutingStats>* routing = nullptr;
};

// The repeat penalty on one row of logits: each distinct token among recent[0..n) has its
// logit divided by `penalty` when positive, multiplied by it otherwise.
void apply_repeat_penalty(float* logits, int64_t vocab, const int32_t* recent, int64_t n, double penalty);
// OpenAI's presence and frequency penalties: generated[0..n) are the tokens generated so
// far; ids outside [0, vocab) are ignored.
void apply_generated_penalties(float* logits, int64_t vocab, const int32_t* generated, int64_t n, double presence,
                               double frequency);

// Returns prompt + continuation; on_text (if set) receives each new piece of text.
std::string generate_text(const ModelConfig& cfg, const ModelParams<float>& params, const Tokenizer& tok,
                          const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text = {});
// The same on compact (bf16 / q8_0) weights.
std::string generate_text(const PackedModel& model, const Tokenizer& tok, const std::string& prompt,
                          const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text = {});

}  // namespace moepp
