#include "serve/openai_api.h"

#include <cmath>

namespace moepp {

using json = nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)), status_(status), param_(std::move(param)), code_(std::move(code)) {}

json ApiError::body() const {
  const char* type = status_ == 401   ? "authentication_error"
                     : status_ == 404 ? "not_found_error"
                     : status_ == 429 ? "rate_limit_error"
                     : status_ >= 500 ? "server_error"
                                      : "invalid_request_error";
  return {{"error",
           {{"message", what()},
            {"type", type},
            {"param", param_.empty() ? json(nullptr) : json(param_)},
            {"code", code_.empty() ? json(nullptr) : json(code_)}}}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

}  // namespace

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // a syntax error, or a number out of range (1e309)
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what(), "", "invalid_json");
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
  return j;
}

namespace {

bool present(const json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

double number(const json& j, const char* key, double fallback) {
  if (!present(j, key)) return fallback;
  if (!j[key].is_number()) bad(key, std::string("'") + key + "' must be a number, got " + j[key].dump());
  const double v = j[key].get<double>();
  if (!std::isfinite(v)) bad(key, std::string("'") + key + "' must be finite");
  return v;
}

int64_t integer(const json& j, const char* key, int64_t fallback) {
  if (!present(j, key)) return fallback;
  if (!j[key].is_number_integer()) bad(key, std::string("'") + key + "' must be an integer, got " + j[key].dump());
  return j[key].get<int64_t>();
}

bool flag(const json& j, const char* key, bool fallback) {
  if (!present(j, key)) return fallback;
  if (!j[key].is_boolean()) bad(key, std::string("'") + key + "' must be true or false, got " + j[key].dump());
  return j[key].get<bool>();
}

// The fields both endpoints share.
void parse_common(const json& j, const ApiLimits& limits, ApiRequest& r) {
  if (present(j, "model")) {
    if (!j["model"].is_string()) bad("model", "'model' must be a string");
    if (j["model"].get<std::string>() != limits.model_name)
      throw ApiError(404, "the model '" + j["model"].get<std::string>() + "' does not exist; this server serves '" +
                              limits.model_name + "'",
                     "model", "model_not_found");
  }
  const int64_t max_tokens = integer(j, "max_tokens", integer(j, "max_completion_tokens", r.chat ? -1 : 16));
  if (max_tokens < -1 || (max_tokens < 0 && present(j, "max_tokens")))
    bad("max_tokens", "'max_tokens' must be 0 or more, got " + std::to_string(max_tokens));
  if (max_tokens >= limits.context)
    bad("max_tokens", "'max_tokens' " + std::to_string(max_tokens) + " does not fit the context of " +
                          std::to_string(limits.context) + " positions");
  r.max_tokens = int(max_tokens);  // -1 (chat without max_tokens): as many as the context holds
  const double temperature = number(j, "temperature", 1.0);
  if (temperature < 0 || temperature > 2) bad("temperature", "'temperature' must be in [0, 2], got " + std::to_string(temperature));
  const double top_p = number(j, "top_p", 1.0);
  if (!(top_p > 0 && top_p <= 1)) bad("top_p", "'top_p' must be in (0, 1], got " + std::to_string(top_p));
  const int64_t top_k = integer(j, "top_k", 0);
  if (top_k < 0) bad("top_k", "'top_k' must be 0 (no limit) or more, got " + std::to_string(top_k));
  const double min_p = number(j, "min_p", 0.0);
  if (min_p < 0 || min_p > 1) bad("min_p", "'min_p' must be in [0, 1], got " + std::to_string(min_p));
  r.sampler = SamplerOptions{temperature, int(std::min<int64_t>(top_k, 1 << 30)), top_p, 0, min_p};
  if (present(j, "seed")) {
    r.seeded = true;
    r.sampler.seed = uint64_t(integer(j, "seed", 0));
  }
  if (present(j, "stop")) {
    const json& s = j["stop"];
    const std::string shape = "'stop' must be a string or a list of up to " + std::to_string(kMaxStopStrings) + " strings";
    if (s.is_string()) {
      r.stop = {s.get<std::string>()};
    } else if (s.is_array() && s.size() <= kMaxStopStrings) {
      for (const auto& e : s) {
        if (!e.is_string()) bad("stop", shape);
        r.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", shape);
    }
    for (const auto& e : r.stop)
      if (e.empty()) bad("stop", "'stop' strings must not be empty");
  }
  const int64_t n = integer(j, "n", 1);
  if (n < 1 || n > limits.max_n)
    bad("n", "'n' must be between 1 and " + std::to_string(limits.max_n) + ", got " + std::to_string(n));
  r.n = int(n);
  r.stream = flag(j, "stream", false);
  if (present(j, "stream_options")) {
    const json& o = j["stream_options"];
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    if (!o.is_object()) bad("stream_options", "'stream_options' must be an object, got " + o.dump());
    r.include_usage = flag(o, "include_usage", false);
  }
  // What the server does not do is refused, not ignored: a client asking for JSON or a
  // tool call would otherwise get free text as if it were the answer. The defaults pass.
  if (present(j, "response_format")) {
    const json& f = j["response_format"];
    if (!(f.is_object() && f.value("type", json("text")) == "text"))
      bad("response_format", "only {\"type\": \"text\"} is supported (no JSON mode), got " + f.dump());
  }
  if (present(j, "tools") && !(j["tools"].is_array() && j["tools"].empty()))
    bad("tools", "tool calls are not supported");
  if (present(j, "tool_choice") && j["tool_choice"] != "none")
    bad("tool_choice", "tool calls are not supported");
  if (present(j, "best_of") && j["best_of"] != 1 && j["best_of"] != r.n)
    bad("best_of", "'best_of' must be 1 or equal to n (no ranking of extra samples), got " + j["best_of"].dump());
  if (present(j, "suffix") && !(j["suffix"].is_string() && j["suffix"].get<std::string>().empty()))
    bad("suffix", "'suffix' (insertion) is not supported");
  r.ignore_eos = flag(j, "ignore_eos", false);
  r.cache_prompt = flag(j, "cache_prompt", true);
  auto penalty = [&](const char* key) {
    const double v = number(j, key, 0.0);
    if (v < -2 || v > 2) bad(key, std::string("'") + key + "' must be in [-2, 2], got " + std::to_string(v));
    return v;
  };
  r.presence_penalty = penalty("presence_penalty");
  r.frequency_penalty = penalty("frequency_penalty");
  r.repeat_penalty = number(j, "repeat_penalty", 1.0);
  if (r.repeat_penalty <= 0)
    bad("repeat_penalty", "'repeat_penalty' must be positive (1: off), got " + std::to_string(r.repeat_penalty));
  const int64_t last_n = integer(j, "repeat_last_n", 64);
  if (last_n < -1) bad("repeat_last_n", "'repeat_last_n' must be -1 (the whole context) or more, got " + std::to_string(last_n));
  r.repeat_last_n = last_n < 0 || last_n > limits.context ? int(limits.context) : int(last_n);
  if (present(j, "logit_bias")) {
    const json& bias = j["logit_bias"];
    const char* shape = "'logit_bias' must map token ids (as strings) to numbers in [-100, 100]";
    if (!bias.is_object()) bad("logit_bias", shape);
    for (const auto& [key, value] : bias.items()) {
      if (key.empty() || key.size() > 9 || key.find_first_not_of("0123456789") != std::string::npos ||
          !value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100))
        bad("logit_bias", std::string(shape) + "; got \"" + key + "\": " + value.dump());
      r.logit_bias.emplace_back(int32_t(std::stol(key)), value.get<float>());
    }
  }
}

}  // namespace

ApiRequest parse_completion_request(const std::string& body, const ApiLimits& limits) {
  const json j = parse_body(body);
  ApiRequest r;
  if (!present(j, "prompt")) bad("prompt", "'prompt' is required");
  const json& p = j["prompt"];
  auto token_ids = [](const json& list) {
    if (list.empty()) bad("prompt", "a token-id prompt must not be empty");
    ApiPrompt out;
    for (const auto& e : list) {
      if (!e.is_number_integer()) bad("prompt", "a token-id prompt must hold integers only");
      const int64_t id = e.get<int64_t>();
      if (id < 0 || id > INT32_MAX) bad("prompt", "token id " + std::to_string(id) + " is out of range");
      out.ids.push_back(int32_t(id));
    }
    return out;
  };
  const char* shapes = "'prompt' must be a string, a list of token ids, or a list of strings or of token-id lists";
  if (p.is_string()) {
    r.prompts.push_back({p.get<std::string>(), {}});
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    r.prompts.push_back(token_ids(p));
  } else if (p.is_array() && !p.empty()) {
    for (const auto& e : p) {
      if (e.is_string() && p[0].is_string()) r.prompts.push_back({e.get<std::string>(), {}});
      else if (e.is_array() && p[0].is_array()) r.prompts.push_back(token_ids(e));
      else bad("prompt", std::string(shapes) + " (a batch holds one kind)");
    }
  } else {
    bad("prompt", shapes);
  }
  parse_common(j, limits, r);
  if (int64_t(r.prompts.size()) * r.n > limits.max_sequences)
    bad("prompt", std::to_string(r.prompts.size()) + " prompts x " + std::to_string(r.n) + " choices are " +
                      std::to_string(int64_t(r.prompts.size()) * r.n) + " sequences; this server holds " +
                      std::to_string(limits.max_sequences) + " at once");
  r.echo = flag(j, "echo", false);
  if (present(j, "logprobs")) {
    const int64_t k = integer(j, "logprobs", 0);
    if (k < 0 || k > 5) bad("logprobs", "'logprobs' must be between 0 and 5, got " + std::to_string(k));
    r.logprobs = int(k);
  }
  if (r.stream && r.echo && r.logprobs >= 0)
    bad("echo", "a streamed request cannot score its prompt (echo with logprobs): send it with 'stream': false");
  return r;
}

ApiRequest parse_chat_request(const std::string& body, const ApiLimits& limits) {
  const json j = parse_body(body);
  ApiRequest r;
  r.chat = true;
  if (!present(j, "messages")) bad("messages", "'messages' is required");
  if (!j["messages"].is_array() || j["messages"].empty()) bad("messages", "'messages' must be a non-empty list");
  for (const auto& m : j["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad("messages", "every message needs a 'role' string");
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer")
      bad("messages", "unknown role '" + role + "' (system, user, assistant)");
    if (!m.contains("content") || !m["content"].is_string()) bad("messages", "every message needs a 'content' string");
    r.messages.push_back({role == "developer" ? "system" : role, m["content"].get<std::string>()});
  }
  parse_common(j, limits, r);
  if (flag(j, "logprobs", false)) {
    const int64_t k = integer(j, "top_logprobs", 0);
    if (k < 0 || k > 5) bad("top_logprobs", "'top_logprobs' must be between 0 and 5, got " + std::to_string(k));
    r.logprobs = int(k);
  } else if (present(j, "top_logprobs")) {
    bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  }
  return r;
}

std::string finish_reason(const GenerateStats& s) {
  return s.stopped == GenerateStats::Stop::eos || s.stopped == GenerateStats::Stop::stop_string ? "stop" : "length";
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {

json number_or_null(float v) { return std::isnan(v) ? json(nullptr) : json(v); }

}  // namespace

json completion_logprobs(const ApiChoice& c, size_t& offset) {
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (size_t t = 0; t < c.logprobs.size(); ++t) {
    tokens.push_back(c.tokens[t]);
    values.push_back(number_or_null(c.logprobs[t].logprob));
    json top = json::object();
    for (size_t a = 0; a < c.logprobs[t].top.size(); ++a) top[c.top_tokens[t][a]] = c.logprobs[t].top[a].second;
    tops.push_back(std::isnan(c.logprobs[t].logprob) ? json(nullptr) : top);
    offsets.push_back(offset);
    offset += c.tokens[t].size();
  }
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json chat_logprobs(const ApiChoice& c) {
  json content = json::array();
  for (size_t t = 0; t < c.logprobs.size(); ++t) {
    json top = json::array();
    for (size_t a = 0; a < c.logprobs[t].top.size(); ++a)
      top.push_back({{"token", c.top_tokens[t][a]}, {"logprob", c.logprobs[t].top[a].second}});
    content.push_back({{"token", c.tokens[t]}, {"logprob", c.logprobs[t].logprob}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json completion_response(const std::string& id, int64_t created, const std::string& model,
                         const std::vector<ApiChoice>& choices, int64_t prompt_tokens, int64_t completion_tokens) {
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ApiChoice& c = choices[i];
    json lp = nullptr;
    size_t offset = 0;
    if (!c.tokens.empty() || !c.logprobs.empty()) lp = completion_logprobs(c, offset);
    out.push_back({{"text", c.text}, {"index", i}, {"logprobs", lp}, {"finish_reason", c.finish_reason}});
  }
  return {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model}, {"choices", out},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json chat_response(const std::string& id, int64_t created, const std::string& model,
                   const std::vector<ApiChoice>& choices, int64_t prompt_tokens, int64_t completion_tokens,
                   bool logprobs) {
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ApiChoice& c = choices[i];
    const json lp = logprobs ? chat_logprobs(c) : json(nullptr);
    out.push_back({{"index", i},
                   {"message", {{"role", "assistant"}, {"content", c.text}}},
                   {"logprobs", lp},
                   {"finish_reason", c.finish_reason}});
  }
  return {{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", model}, {"choices", out},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

json completion_chunk(const std::string& id, int64_t created, const std::string& model, int index,
                      const std::string& text, const std::string& finish_reason, const json& logprobs) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"text", text},
             {"index", index},
             {"logprobs", logprobs},
             {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}}}};
}

json chat_chunk(const std::string& id, int64_t created, const std::string& model, int index, const std::string& text,
                const std::string& finish_reason, bool first, const json& logprobs) {
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"index", index},
             {"delta", delta},
             {"logprobs", logprobs},
             {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}}}};
}

}  // namespace moepp
