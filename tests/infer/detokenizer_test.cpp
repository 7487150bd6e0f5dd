// The incremental detokenizer against the tokenizer's own decode of every id at every
// length: random id sequences over the whole vocabulary (byte pieces that make invalid and
// split UTF-8, lone spaces, control ids that decode to nothing), and the cases its window
// is built around, spelled out. And Generation's stop strings, which it searches only
// where the text changed, against a search of the whole text after every token.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/tokenizer.h"
#include "infer/detokenizer.h"
#include "infer/generation.h"
#include "model/config.h"
#include "test_util.h"

using namespace moepp;

namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const std::string dir = test::scratch_dir("moepp-detokenizer");
    {
      std::ofstream out(dir + "/corpus.txt");
      for (int i = 1; i <= 300; ++i)
        out << "Line " << i << ":  the quick brown fox jumps over the lazy dog, caf\xC3\xA9 na\xC3\xAFve " << i % 13
            << ".\n";
    }
    Tokenizer::train({dir + "/corpus.txt"}, dir + "/tokenizer.model", 500);
    return Tokenizer(dir + "/tokenizer.model");
  }();
  return tok;
}

// Pushes ids one at a time; after each, text() must be the decode of all ids so far, and
// the prefix push() reports unchanged must be one.
void expect_matches_full_decode(const Tokenizer& tok, const std::vector<int32_t>& start,
                                const std::vector<int32_t>& pushed) {
  Detokenizer d(tok, start);
  std::vector<int32_t> ids = start;
  ASSERT_EQ(d.text(), tok.decode(ids));
  for (size_t i = 0; i < pushed.size(); ++i) {
    const std::string before = d.text();
    const size_t unchanged = d.push(pushed[i]);
    ids.push_back(pushed[i]);
    const std::string want = tok.decode(ids);
    ASSERT_EQ(d.text(), want) << "after " << ids.size() << " ids (the last " << pushed[i] << ")";
    ASSERT_LE(unchanged, std::min(before.size(), want.size()));
    ASSERT_EQ(before.compare(0, unchanged, want, 0, unchanged), 0) << "reported " << unchanged << " bytes unchanged";
    ASSERT_EQ(d.ids(), ids);
  }
}

void expect_matches_full_decode(const std::vector<int32_t>& start, const std::vector<int32_t>& pushed) {
  expect_matches_full_decode(tokenizer(), start, pushed);
}

std::vector<int32_t> byte_pieces(const std::string& bytes) {
  const Tokenizer& tok = tokenizer();
  std::vector<int32_t> ids;
  for (unsigned char c : bytes) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", c);
    int32_t id = -1;
    for (int32_t v = 0; v < tok.vocab_size() && id < 0; ++v)
      if (tok.piece(v) == name) id = v;
    EXPECT_GE(id, 0) << "no byte piece " << name;
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

TEST(Detokenizer, RandomIdsOverTheWholeVocabularyDecodeAsAllTogether) {
  const int32_t V = tokenizer().vocab_size();
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    Rng rng(seed);
    std::vector<int32_t> start(size_t(rng.below(6))), pushed(300);
    for (auto& id : start) id = int32_t(rng.below(uint64_t(V)));
    for (auto& id : pushed) id = int32_t(rng.below(uint64_t(V)));
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_matches_full_decode(start, pushed);
  }
}

// The tokenizers MoE++ and Mixtral ship are LLaMA's kind: no normalization, runs of spaces
// kept as pieces, digits split, byte fallback (moepp's own trainer normalizes and folds
// spaces). The same property on such a model, and on one that puts spaces after words.
TEST(Detokenizer, LlamaStyleTokenizersDecodeAsAllTogether) {
  const std::string dir = test::scratch_dir("moepp-detokenizer-llama");
  {
    std::ofstream out(dir + "/corpus.txt");
    for (int i = 1; i <= 600; ++i)
      out << "Line " << i << ":   the  quick brown fox\tjumps over the lazy dog, caf\xC3\xA9  " << i * 37 % 1000
          << "  end.\n";
  }
  for (const char* suffix : {"false", "true"}) {
    const std::string model = dir + "/llama_" + suffix;
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + dir + "/corpus.txt --model_prefix=" + model +
        " --vocab_size=400 --hard_vocab_limit=false --model_type=bpe --normalization_rule_name=identity --add_dummy_prefix=true"
        " --remove_extra_whitespaces=false --split_digits=true --byte_fallback=true --unk_id=0 --bos_id=1"
        " --eos_id=2 --pad_id=-1 --minloglevel=2 --treat_whitespace_as_suffix=" + suffix);
    ASSERT_TRUE(status.ok()) << status.ToString();
    const Tokenizer tok(model + ".model");
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      Rng rng(seed);
      const std::vector<int32_t> words = tok.encode(" the  quick\t\xE4\xB8\xAD 12  end.");
      std::vector<int32_t> start(size_t(rng.below(4))), pushed(300);
      for (auto& id : start) id = int32_t(rng.below(uint64_t(tok.vocab_size())));
      for (auto& id : pushed)
        id = seed % 2 ? int32_t(rng.below(uint64_t(tok.vocab_size()))) : words[size_t(rng.below(words.size()))];
      SCOPED_TRACE(std::string("suffix spaces ") + suffix + ", seed " + std::to_string(seed));
      expect_matches_full_decode(tok, start, pushed);
    }
  }
}

TEST(Detokenizer, TextLikeIdsWithSplitCharactersDecodeAsAllTogether) {
  // Mostly ordinary pieces, with multi-byte characters spelled as byte pieces now and then
  // (whole, or cut short by an ordinary piece): the text a model generates.
  const Tokenizer& tok = tokenizer();
  const std::vector<int32_t> words = tok.encode("the quick brown fox, caf\xC3\xA9  na\xC3\xAFve dog 12.");
  const std::vector<std::string> chars = {"\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\xC3\xA9", "\xE4\xB8", "\x80"};
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    Rng rng(seed);
    std::vector<int32_t> pushed;
    while (pushed.size() < 400) {
      if (rng.below(5) == 0) {
        const auto bytes = byte_pieces(chars[size_t(rng.below(chars.size()))]);
        pushed.insert(pushed.end(), bytes.begin(), bytes.end());
      } else {
        pushed.push_back(words[size_t(rng.below(words.size()))]);
      }
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    expect_matches_full_decode(tok.encode("Line 1"), pushed);
  }
}

TEST(Detokenizer, PiecesThatDecodeToNothingAlone) {
  const Tokenizer& tok = tokenizer();
  std::vector<int32_t> pushed;
  const int32_t space = tok.encode(" x").front();  // "▁" when the tokenizer has it alone, else "▁x"
  for (int i = 0; i < 12; ++i) pushed.push_back(tok.eos_id());  // more control ids than a window looks back
  pushed.push_back(space);
  pushed.push_back(space);
  const auto dog = tok.encode("dog");
  pushed.insert(pushed.end(), dog.begin(), dog.end());
  for (int i = 0; i < 3; ++i) pushed.push_back(tok.bos_id());
  pushed.insert(pushed.end(), dog.begin(), dog.end());
  expect_matches_full_decode({}, pushed);
  expect_matches_full_decode({tok.eos_id()}, pushed);
  expect_matches_full_decode(tok.encode("Line"), pushed);
}

TEST(Detokenizer, ACharacterCompletedByItsLastBytePieceReplacesItsPlaceholder) {
  const Tokenizer& tok = tokenizer();
  auto pushed = byte_pieces("\xE4\xB8\xAD");
  Detokenizer d(tok, tok.encode("Line"));
  const std::string line = d.text();
  d.push(pushed[0]);
  EXPECT_EQ(d.text(), line + "\xEF\xBF\xBD");  // U+FFFD while the character is incomplete
  d.push(pushed[1]);
  const size_t unchanged = d.push(pushed[2]);
  EXPECT_EQ(d.text(), line + "\xE4\xB8\xAD");
  EXPECT_LE(unchanged, line.size());
}

// Forced tokens (one-hot logits) with stop strings taken from the text they make: the
// generation must end at the token where the whole text, decoded and searched from its
// start after every token, first holds a stop string, with the continuation cut there.
TEST(GenerationText, StopStringsEndWhereASearchOfTheWholeTextFindsThem) {
  const Tokenizer& tok = tokenizer();
  const ModelConfig cfg = ModelConfig::preset("tiny", tok.vocab_size());
  const std::vector<int32_t> words = tok.encode("the quick brown fox, caf\xC3\xA9  na\xC3\xAFve dog 12.");
  const std::vector<int32_t> prompt = tok.encode_prompt("Line 1");
  const std::vector<int32_t> prompt_text_ids(prompt.begin() + 1, prompt.end());
  const std::string prompt_text = tok.decode(prompt_text_ids);
  int stopped_early = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    Rng rng(seed);
    std::vector<int32_t> forced;
    while (forced.size() < 60) {
      if (rng.below(6) == 0) {
        const auto bytes = byte_pieces(rng.below(2) ? "\xE4\xB8\xAD" : "\xE4\xB8");
        forced.insert(forced.end(), bytes.begin(), bytes.end());
      } else {
        forced.push_back(words[size_t(rng.below(words.size()))]);
      }
    }
    // Stop strings: pieces of the final text (2-6 bytes from anywhere), and one never there.
    std::vector<int32_t> all = prompt_text_ids;
    all.insert(all.end(), forced.begin(), forced.end());
    const std::string final_text = tok.decode(all).substr(prompt_text.size());
    GenerateOptions o;
    o.max_tokens = int(forced.size());
    o.sampler = SamplerOptions{0.0, 0, 1.0, 1};
    o.stop = {"never there"};
    for (int i = 0; i < 2; ++i) {
      const size_t at = size_t(rng.below(final_text.size() - 6)), len = 2 + size_t(rng.below(5));
      o.stop.push_back(final_text.substr(at, len));
    }
    // The expectation: after token k, the text of the prompt and tokens 0..k, searched whole.
    size_t want_tokens = forced.size();
    std::string want_text = final_text;
    std::vector<int32_t> ids = prompt_text_ids;
    std::string continuation;
    for (size_t k = 0; k < forced.size(); ++k) {
      ids.push_back(forced[k]);
      const std::string text = tok.decode(ids);
      if (text.compare(0, prompt_text.size(), prompt_text) == 0) continuation = text.substr(prompt_text.size());
      size_t cut = std::string::npos;
      for (const auto& s : o.stop) cut = std::min(cut, continuation.find(s));
      if (cut != std::string::npos) {
        want_tokens = k;  // the token that completed the stop string is not counted as generated text
        want_text = continuation.substr(0, cut);
        break;
      }
    }
    Generation gen(cfg, tok, prompt, o);
    std::vector<float> logits(size_t(cfg.vocab_size));
    size_t steps = 0;
    for (int32_t id : forced) {
      std::fill(logits.begin(), logits.end(), 0.0f);
      logits[size_t(id)] = 100.0f;
      const auto next = gen.step(logits.data());
      ++steps;
      if (!next) break;
      ASSERT_EQ(*next, id);
      if (gen.finished()) break;
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_TRUE(gen.finished());
    EXPECT_EQ(gen.continuation(), want_text);
    if (want_tokens < forced.size()) {
      EXPECT_EQ(steps, want_tokens + 1);
      EXPECT_EQ(gen.stats().stopped, GenerateStats::Stop::stop_string);
      ++stopped_early;
    }
  }
  EXPECT_GT(stopped_early, 20);  // most runs meet one of their stop strings before the end
}
