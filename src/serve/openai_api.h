// The OpenAI API's JSON: requests of /v1/completions and /v1/chat/completions checked field
// by field into what the scheduler runs, and the response and stream-chunk objects built
// from what it produced. Every client mistake is an ApiError carrying the HTTP status and
// the OpenAI error shape {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/generation.h"
#include "infer/generator.h"
#include "serve/chat_template.h"

namespace moepp {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "");
  int status() const { return status_; }
  nlohmann::json body() const;

 private:
  int status_;
  std::string param_, code_;
};

// What the server knows when it checks a request.
// Stop strings a request may give. OpenAI's API takes 4; evaluation harnesses send a
// task's stop sequences as they are (lm-evaluation-harness's `until`), sometimes more.
constexpr size_t kMaxStopStrings = 16;

struct ApiLimits {
  std::string model_name;
  int64_t context = 0;  // positions per sequence
  int max_n = 16;       // choices per request
  int max_sequences = 80;  // prompts x choices per request (what the server holds at once)
};

// One completion prompt: text, or token ids (as evaluation harnesses send them).
struct ApiPrompt {
  std::string text;          // empty with ids
  std::vector<int32_t> ids;  // used exactly as given
};

// A checked completion or chat request.
struct ApiRequest {
  bool chat = false;
  // completions: one prompt, or a batch (a list of strings or of token-id lists); each
  // prompt gets n choices, indexed prompt-major (choice j of prompt i: i * n + j).
  std::vector<ApiPrompt> prompts;
  std::vector<ChatMessage> messages;
  int max_tokens = 16;
  SamplerOptions sampler;
  bool seeded = false;
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  // stream_options.include_usage: a last chunk with empty choices and the usage, as
  // OpenAI sends it only when asked (clients that read choices[0] of every chunk break on it).
  bool include_usage = false;
  int logprobs = -1;  // >= 0: top alternatives per token (completions: the "logprobs" integer)
  bool echo = false;
  bool ignore_eos = false;  // llama.cpp's server extension: generate max_tokens whatever comes
  bool cache_prompt = true;  // llama.cpp's server extension: false runs the whole prompt, whatever is cached
  // OpenAI's penalties (over the generated tokens) and logit_bias (token id, bias), and
  // llama.cpp's repeat penalty (over the last repeat_last_n tokens, prompt included).
  double presence_penalty = 0, frequency_penalty = 0;
  std::vector<std::pair<int32_t, float>> logit_bias;
  double repeat_penalty = 1.0;
  int repeat_last_n = 64;
};

// A request body as a JSON object (ApiError 400 when it is not valid JSON or not an object).
nlohmann::json parse_body(const std::string& body);

ApiRequest parse_completion_request(const std::string& body, const ApiLimits& limits);
ApiRequest parse_chat_request(const std::string& body, const ApiLimits& limits);

// One finished choice, as the response builders need it.
struct ApiChoice {
  std::string text;  // the continuation (echo: prompt text + continuation)
  std::string finish_reason;  // "stop" or "length"
  std::vector<std::string> tokens;  // logprobs: the pieces of the scored tokens
  std::vector<TokenLogprob> logprobs;  // (echo: the prompt's first token has none: NaN)
  std::vector<std::vector<std::string>> top_tokens;  // the pieces of each top list
};

std::string finish_reason(const GenerateStats& s);

nlohmann::json completion_response(const std::string& id, int64_t created, const std::string& model,
                                   const std::vector<ApiChoice>& choices, int64_t prompt_tokens, int64_t completion_tokens);
nlohmann::json chat_response(const std::string& id, int64_t created, const std::string& model,
                             const std::vector<ApiChoice>& choices, int64_t prompt_tokens, int64_t completion_tokens,
                             bool logprobs);
// {"prompt_tokens", "completion_tokens", "total_tokens"}
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);
// A choice's log-probabilities as the completions API gives them ({tokens, token_logprobs,
// top_logprobs, text_offset}; offset: the first token's text offset, advanced past the
// tokens) and as the chat API does ({content: [{token, logprob, top_logprobs}]}).
nlohmann::json completion_logprobs(const ApiChoice& c, size_t& offset);
nlohmann::json chat_logprobs(const ApiChoice& c);
// Streaming chunks: text for choice `index`; finish_reason empty while the choice runs;
// logprobs (null, or as above) of the tokens generated since the choice's last chunk.
nlohmann::json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                                 const std::string& text, const std::string& finish_reason,
                                 const nlohmann::json& logprobs = nullptr);
nlohmann::json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                          const std::string& text, const std::string& finish_reason, bool first,
                          const nlohmann::json& logprobs = nullptr);

}  // namespace moepp
