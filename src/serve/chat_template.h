// Chat templates: a list of {role, content} messages as the prompt text a chat model was
// trained on. moepp does not run Jinja; it recognises the common template families by the
// markers in the Jinja source of tokenizer_config.json's "chat_template" and renders them
// itself, to the text the published templates give (tests/fixtures/chat_templates.json):
// ChatML (<|im_start|>role ... <|im_end|>), Llama-2 (<s>[INST] <<SYS>> ... [/INST] ... </s>),
// Mistral / Mixtral-Instruct (<s>[INST] ... [/INST]...</s>) and Zephyr (<|user|> ... </s>).
// The BOS and EOS pieces these write are tokens: tokenize the text with
// Tokenizer::encode_chat_prompt. A folder without a template (or with another family) gets
// the plain default:
//     System: {system}\n\nUser: {user}\n\nAssistant: {assistant}\n\n ... Assistant:
// `--chat-template FILE` overrides: a file holding a Jinja template (recognised the same
// way) or one of the names chatml, llama2, mistral, zephyr, plain.
#pragma once
#include <string>
#include <vector>

namespace moepp {

enum class ChatTemplate { plain, chatml, llama2, mistral, zephyr };

struct ChatMessage {
  std::string role, content;  // role: system, user or assistant
};

const char* chat_template_name(ChatTemplate t);
// The family of a Jinja template or a family name; plain when neither is recognised.
ChatTemplate detect_chat_template(const std::string& text);
// The folder's tokenizer_config.json "chat_template" (plain when absent).
ChatTemplate folder_chat_template(const std::string& dir);

// The prompt text, ending where the assistant's reply begins. bos/eos: the tokenizer's
// pieces, for the templates that write them inside the text (Llama-2, Mistral, Zephyr).
// System messages: the last one is the system message, wherever it stands.
std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, const std::string& bos,
                        const std::string& eos);

}  // namespace moepp
