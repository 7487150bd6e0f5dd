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
    case ChatTemplate::mistral: return "mistral";
    case ChatTemplate::zephyr: return "zephyr";
    case ChatTemplate::plain: break;
  }
  return "plain";
}

ChatTemplate detect_chat_template(const std::string& text) {
  for (ChatTemplate t :
       {ChatTemplate::plain, ChatTemplate::chatml, ChatTemplate::llama2, ChatTemplate::mistral, ChatTemplate::zephyr})
    if (text == chat_template_name(t) || text == std::string(chat_template_name(t)) + "\n") return t;
  if (text.find("<|im_start|>") != std::string::npos) return ChatTemplate::chatml;
  // Llama-2's template puts the system message in <<SYS>>; Mistral's and Mixtral's have none.
  if (text.find("[INST]") != std::string::npos)
    return text.find("<<SYS>>") != std::string::npos ? ChatTemplate::llama2 : ChatTemplate::mistral;
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

namespace {

// Python's str.strip() on ASCII whitespace, as Llama-2's template strips each message.
std::string strip(const std::string& s) {
  const char* space = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

// The content of the last system message, if any (empty otherwise).
std::string system_message(const std::vector<ChatMessage>& messages) {
  std::string system;
  for (const auto& m : messages)
    if (m.role == "system") system = m.content;
  return system;
}

}  // namespace

std::string render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages, const std::string& bos,
                        const std::string& eos) {
  std::string out;
  const std::string system = system_message(messages);
  bool first_user = true;
  switch (t) {
    case ChatTemplate::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatTemplate::llama2:
      // Every user turn opens with BOS; the system message goes inside the first [INST]
      // block; an assistant turn closes with " EOS".
      for (const auto& m : messages) {
        if (m.role == "user") {
          std::string content;
          if (first_user && !system.empty()) content.append("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n");
          content += m.content;
          out.append(bos).append("[INST] ").append(strip(content)).append(" [/INST]");
          first_user = false;
        } else if (m.role == "assistant") {
          out.append(" ").append(strip(m.content)).append(" ").append(eos);
        }
      }
      return out;
    case ChatTemplate::mistral:
      // One BOS; replies follow [/INST] directly and close with EOS. Mixtral's template takes
      // no system message: it opens the first user message, as Mistral's later templates do.
      out = bos;
      for (const auto& m : messages) {
        if (m.role == "user") {
          out += "[INST] ";
          if (first_user && !system.empty()) out.append(system).append("\n\n");
          out.append(m.content).append(" [/INST]");
          first_user = false;
        } else if (m.role == "assistant") {
          out.append(m.content).append(eos);
        }
      }
      return out;
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
