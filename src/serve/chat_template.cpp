#include "serve/chat_template.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace moepp {

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::chatml: return "chatml";
    case ChatTemplate::llama2: return "llama2";
    case ChatTemplate::zephyr: return "zephyr";
    case ChatTemplate::plain: break;
  }
  return "plain";
}

ChatTemplate detect_chat_template(const std::string& text) {
  for (ChatTemplate t : {ChatTemplate::plain, ChatTemplate::chatml, ChatTemplate::llama2, ChatTemplate::zephyr})
    if (text == chat_template_name(t) || text == std::string(chat_template_name(t)) + "\n") return t;
  if (text.find("<|im_start|>") != std::string::npos) return ChatTemplate::chatml;
  if (text.find("[INST]") != std::string::npos) return ChatTemplate::llama2;
  if (text.find("<|user|>") != std::string::npos) return ChatTemplate::zephyr;
  return ChatTemplate::plain;
}

ChatTemplate folder_chat_template(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  if (!file_exists(path)) return ChatTemplate::plain;
  const nlohmann::json j = read_json_file(path);
  if (!j.contains("chat_template")) return ChatTemplate::plain;
  const auto& t = j["chat_template"];
  if (t.is_string()) return detect_chat_template(t.get<std::string>());
  // A list of named templates: the "default" one.
  if (t.is_array())
    for (const auto& e : t)
      if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
          e["template"].is_string())
        return detect_chat_template(e["template"].get<std::string>());
  return ChatTemplate::plain;
}

std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, const std::string& eos) {
  std::string out;
  switch (t) {
    case ChatTemplate::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatTemplate::llama2: {
      // The system message goes inside the first [INST] block; an assistant turn closes with EOS.
      std::string system;
      bool first = true;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system = "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n";
        } else if (m.role == "user") {
          out += "[INST] " + (first ? system : std::string()) + m.content + " [/INST]";
          first = false;
        } else {
          out += " " + m.content + eos;
        }
      }
      return out;
    }
    case ChatTemplate::zephyr:
      for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + eos + "\n";
      return out + "<|assistant|>\n";
    case ChatTemplate::plain:
      break;
  }
  for (const auto& m : messages) {
    const std::string who = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
    out += who + ": " + m.content + "\n\n";
  }
  return out + "Assistant:";
}

}  // namespace moepp
