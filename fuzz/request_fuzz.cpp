// libFuzzer target: an HTTP request body of arbitrary bytes, read as `moepp serve` reads
// it (serve/openai_api: parse_completion_request, parse_chat_request). Every refusal must be
// an ApiError with a 4xx status, naming a field where the body was JSON; an accepted request
// must hold only what the checks promise the scheduler (counts within the limits, sampling
// values in range, non-empty prompts and stop strings), and its chat messages must render
// in every template family. Seeds: fuzz/seeds/request/*.json.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "serve/chat_template.h"
#include "serve/openai_api.h"

namespace {

[[noreturn]] void broken(const char* what, const std::string& body) {
  std::fprintf(stderr, "an accepted request breaks its promise: %s\n%s\n", what, body.c_str());
  __builtin_trap();
}

void check_accepted(const moepp::ApiRequest& r, const moepp::ApiLimits& limits, const std::string& body) {
  if (r.n < 1 || r.n > limits.max_n) broken("n", body);
  if (r.max_tokens < (r.chat ? -1 : 0) || r.max_tokens >= limits.context) broken("max_tokens", body);
  const double t = r.sampler.temperature, p = r.sampler.top_p;
  if (!(t >= 0 && t <= 2) || !(p > 0 && p <= 1) || r.sampler.top_k < 0) broken("sampling", body);
  if (!(r.sampler.min_p >= 0 && r.sampler.min_p <= 1)) broken("min_p", body);
  if (!(std::abs(r.presence_penalty) <= 2) || !(std::abs(r.frequency_penalty) <= 2)) broken("penalties", body);
  if (!(r.repeat_penalty > 0 && std::isfinite(r.repeat_penalty)) || r.repeat_last_n < 0) broken("repeat", body);
  for (const auto& [id, bias] : r.logit_bias)
    if (id < 0 || !(std::abs(bias) <= 100)) broken("logit_bias", body);
  if (r.stop.size() > moepp::kMaxStopStrings) broken("stop count", body);
  for (const auto& s : r.stop)
    if (s.empty()) broken("empty stop", body);
  if (r.logprobs < -1 || r.logprobs > 5) broken("logprobs", body);
  if (r.include_usage && !r.stream) broken("stream_options", body);
  if (r.chat) {
    if (r.messages.empty()) broken("messages", body);
    for (auto t : {moepp::ChatTemplate::plain, moepp::ChatTemplate::chatml, moepp::ChatTemplate::llama2,
                   moepp::ChatTemplate::mistral, moepp::ChatTemplate::zephyr})
      (void)moepp::render_chat(t, r.messages, "<s>", "</s>");
  } else {
    if (r.prompts.empty() || int64_t(r.prompts.size()) * r.n > limits.max_sequences) broken("prompt count", body);
    for (const auto& q : r.prompts)
      for (int32_t id : q.ids)
        if (id < 0) broken("prompt id", body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  const moepp::ApiLimits limits{"m", 64, 4, 8};
  for (bool chat : {false, true}) {
    try {
      const moepp::ApiRequest r =
          chat ? moepp::parse_chat_request(body, limits) : moepp::parse_completion_request(body, limits);
      check_accepted(r, limits, body);
    } catch (const moepp::ApiError& e) {
      if (e.status() < 400 || e.status() >= 500) {
        std::fprintf(stderr, "a refusal with status %d\n", e.status());
        __builtin_trap();
      }
    }
  }
  return 0;
}
