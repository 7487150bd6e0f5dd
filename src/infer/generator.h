// Generator: text in, text out. Encodes the prompt (with BOS), prefills a Session, samples
// up to max_tokens (stopping at EOS or the context), and reports text as it grows: pieces
// are decoded together with the prompt so that leading spaces survive. Non-finite logits
// stop generation with a moepp::Error naming the step.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "infer/sampler.h"
#include "model/config.h"
#include "model/packed_model.h"
#include "model/params.h"
#include "moe/routing_stats.h"

namespace moepp {

struct GenerateOptions {
  int max_tokens = 128;
  SamplerOptions sampler;
  // When set, receives the routing statistics of every token run (the prompt and the
  // generated tokens), pooled per MoE layer (the C API's moepp_routing after moepp_generate).
  std::vector<RoutingStats>* routing = nullptr;
};

// Returns prompt + continuation; on_text (if set) receives each new piece of text.
std::string generate_text(const ModelConfig& cfg, const ModelParams<float>& params, const Tokenizer& tok,
                          const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text = {});
// The same on compact (bf16 / q8_0) weights.
std::string generate_text(const PackedModel& model, const Tokenizer& tok, const std::string& prompt,
                          const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text = {});

}  // namespace moepp
