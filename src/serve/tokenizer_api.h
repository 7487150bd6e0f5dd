// The tokenizer over HTTP, as vLLM's server offers it and lm-evaluation-harness's remote
// tokenizer reads it (its local-completions then needs no tokenizer of its own):
//   GET  /tokenizer_info  {"eos_token", "bos_token", "pad_token", "chat_template", "model_max_length"}
//   POST /tokenize        {"prompt": text, "add_special_tokens": true} -> {"tokens", "count", "max_model_len"}
//   POST /detokenize      {"tokens": [ids]} -> {"prompt": text}
// The BOS and EOS pieces written in a text ("<s>", "</s>") tokenize as those tokens
// (Tokenizer::encode_with_special_pieces). The server calls these under the scheduler's
// tokenizer lock, as it encodes prompts.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "data/tokenizer.h"

namespace moepp {

nlohmann::json tokenizer_info(const Tokenizer& tok, int64_t context);
// Bodies are checked field by field; mistakes are ApiError 400s naming the field.
nlohmann::json tokenize_request(const Tokenizer& tok, const std::string& body, int64_t context);
nlohmann::json detokenize_request(const Tokenizer& tok, const std::string& body);

}  // namespace moepp
