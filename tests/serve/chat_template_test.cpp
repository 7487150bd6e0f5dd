// Chat templates (serve/chat_template.h) against the text the published templates give when
// Jinja renders them as transformers does (tests/fixtures/chat_templates.json, written by
// tools/reference/chat_template_fixtures.py), and the tokens such a text becomes.
#include "serve/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "test_util.h"

using namespace moepp;

namespace {

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> m;
  for (const auto& e : j) m.push_back({e["role"].get<std::string>(), e["content"].get<std::string>()});
  return m;
}

}  // namespace

TEST(ChatTemplate, FamiliesRenderWhatTheirPublishedTemplatesRender) {
  std::ifstream in(std::string(MOEPP_FIXTURES_DIR) + "/chat_templates.json");
  ASSERT_TRUE(in) << "tests/fixtures/chat_templates.json";
  const nlohmann::json fixture = nlohmann::json::parse(in);
  ASSERT_EQ(fixture.size(), 4u);
  size_t cases = 0;
  for (const auto& t : fixture) {
    const std::string family = t["family"].get<std::string>();
    const ChatTemplate detected = detect_chat_template(t["template"].get<std::string>());
    EXPECT_EQ(chat_template_name(detected), family) << t["model"];
    for (const auto& c : t["cases"]) {
      EXPECT_EQ(render_chat(detected, messages_of(c["messages"]), "<s>", "</s>"), c["text"].get<std::string>())
          << t["model"] << ", " << c["messages"].dump();
      ++cases;
    }
    // The folder's tokenizer_config.json names the template the same way.
    const std::string dir = test::scratch_dir("moepp-chat-template");
    std::ofstream(dir + "/tokenizer_config.json") << nlohmann::json{{"chat_template", t["template"]}}.dump();
    EXPECT_EQ(folder_chat_template(dir), detected);
  }
  EXPECT_EQ(cases, 14u);
}

TEST(ChatTemplate, FamilyNamesAndTheDecisionsBeyondThePublishedTemplates) {
  const std::vector<ChatMessage> m = {{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}};
  for (const char* name : {"plain", "chatml", "llama2", "mistral", "zephyr"}) {
    EXPECT_STREQ(chat_template_name(detect_chat_template(name)), name);
    EXPECT_STREQ(chat_template_name(detect_chat_template(std::string(name) + "\n")), name);
  }
  EXPECT_EQ(detect_chat_template("{{ something else }}"), ChatTemplate::plain);
  // Mixtral's template refuses a system message; moepp opens the first user message with it,
  // as Mistral's later templates do.
  EXPECT_EQ(render_chat(ChatTemplate::mistral, m, "<s>", "</s>"), "<s>[INST] S\n\nU1 [/INST]A1</s>[INST] U2 [/INST]");
  EXPECT_EQ(render_chat(ChatTemplate::plain, m, "<s>", "</s>"),
            "System: S\n\nUser: U1\n\nAssistant: A1\n\nUser: U2\n\nAssistant:");
}

// The BOS and EOS a template writes are single tokens, as Hugging Face tokenizers split their
// special tokens out of text, and the prompt has one BOS whether the template writes it or not.
TEST(ChatTemplate, TheBosAndEosATemplateWritesAreTokens) {
  const std::string dir = test::scratch_dir("moepp-chat-tokens");
  {
    std::ofstream out(dir + "/corpus.txt");
    for (int i = 1; i <= 300; ++i) out << "User " << i << " asks the assistant a question about item " << i % 11 << ".\n";
  }
  Tokenizer::train({dir + "/corpus.txt"}, dir + "/tokenizer.model", 300);
  const Tokenizer tok(dir + "/tokenizer.model");
  const std::string bos = tok.piece(tok.bos_id()), eos = tok.piece(tok.eos_id());
  ASSERT_EQ(bos, "<s>");
  ASSERT_EQ(eos, "</s>");
  const std::vector<ChatMessage> m = {{"user", "a question"}, {"assistant", "item 3"}, {"user", "user 7"}};

  auto cat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> all;
    for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
    return all;
  };
  const int32_t B = tok.bos_id(), E = tok.eos_id();
  EXPECT_EQ(tok.encode_chat_prompt(render_chat(ChatTemplate::llama2, m, bos, eos)),
            cat({{B}, tok.encode("[INST] a question [/INST] item 3 "), {E, B}, tok.encode("[INST] user 7 [/INST]")}));
  EXPECT_EQ(tok.encode_chat_prompt(render_chat(ChatTemplate::mistral, m, bos, eos)),
            cat({{B}, tok.encode("[INST] a question [/INST]item 3"), {E}, tok.encode("[INST] user 7 [/INST]")}));
  // Templates that write no BOS get the tokenizer's, as a completion prompt does.
  const std::string zephyr = render_chat(ChatTemplate::zephyr, m, bos, eos);
  EXPECT_EQ(tok.encode_chat_prompt(zephyr),
            cat({{B}, tok.encode("<|user|>\na question"), {E}, tok.encode("\n<|assistant|>\nitem 3"), {E},
                 tok.encode("\n<|user|>\nuser 7"), {E}, tok.encode("\n<|assistant|>\n")}));
  const std::string plain = render_chat(ChatTemplate::plain, m, bos, eos);
  EXPECT_EQ(tok.encode_chat_prompt(plain), tok.encode_prompt(plain));
}
