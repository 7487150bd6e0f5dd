#include "serve/tokenizer_api.h"

#include <vector>

#include "serve/openai_api.h"

namespace moepp {

using json = nlohmann::json;

namespace {

json piece_or_null(const Tokenizer& tok, int32_t id) { return id >= 0 ? json(tok.piece(id)) : json(nullptr); }

}  // namespace

json tokenizer_info(const Tokenizer& tok, int64_t context) {
  return {{"eos_token", piece_or_null(tok, tok.eos_id())},
          {"bos_token", piece_or_null(tok, tok.bos_id())},
          {"pad_token", nullptr},
          {"chat_template", nullptr},
          {"model_max_length", context}};
}

json tokenize_request(const Tokenizer& tok, const std::string& body, int64_t context) {
  const json j = parse_body(body);
  if (!j.contains("prompt") || !j["prompt"].is_string())
    throw ApiError(400, "'prompt' must be a string", "prompt", "invalid_value");
  bool special = true;
  if (j.contains("add_special_tokens") && !j["add_special_tokens"].is_null()) {
    if (!j["add_special_tokens"].is_boolean())
      throw ApiError(400, "'add_special_tokens' must be true or false", "add_special_tokens", "invalid_value");
    special = j["add_special_tokens"].get<bool>();
  }
  std::vector<int32_t> ids;
  if (special && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const std::vector<int32_t> text = tok.encode_with_special_pieces(j["prompt"].get<std::string>());
  ids.insert(ids.end(), text.begin(), text.end());
  return {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", context}};
}

json detokenize_request(const Tokenizer& tok, const std::string& body) {
  const json j = parse_body(body);
  if (!j.contains("tokens") || !j["tokens"].is_array())
    throw ApiError(400, "'tokens' must be a list of token ids", "tokens", "invalid_value");
  std::vector<int32_t> ids;
  for (const auto& e : j["tokens"]) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= tok.vocab_size())
      throw ApiError(400, "'tokens' must hold ids of the vocabulary of " + std::to_string(tok.vocab_size()) + ", got " +
                              e.dump(),
                     "tokens", "invalid_value");
    ids.push_back(e.get<int32_t>());
  }
  return {{"prompt", tok.decode(ids)}};
}

}  // namespace moepp
