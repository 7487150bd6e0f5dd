// Tokenizer: a SentencePiece model (tokenizer.model), trained by `moepp prepare` or taken
// from a Hugging Face folder. Owns the processor; encode/decode are thread-compatible.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moepp {

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);  // throws moepp::Error
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(const std::string& text) const;
  // BOS (when the tokenizer has one), then encode(text): a sequence as the model is fed it
  // (generation, `moepp tokenize`, `logits --text`, the C API).
  std::vector<int32_t> encode_prompt(const std::string& text) const;
  // encode(text), except that the BOS and EOS pieces written in it ("<s>", "</s>") become
  // those tokens, as a Hugging Face tokenizer splits its special tokens out of text.
  std::vector<int32_t> encode_with_special_pieces(const std::string& text) const;
  // A rendered chat (serve/chat_template): encode_with_special_pieces(text), with BOS first
  // when the tokenizer has one and the text does not already begin with it.
  std::vector<int32_t> encode_chat_prompt(const std::string& text) const;
  std::string decode(std::span<const int32_t> ids) const;
  std::string piece(int32_t id) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;

  // Trains a BPE model of vocab_size pieces on the lines of the text files and writes it
  // atomically to model_path. The files are read here and their lines handed to the
  // trainer one by one: no path reaches SentencePiece's flag parser, so spaces, commas or
  // "--flag=value" in a file name are just a name.
  static void train(const std::vector<std::string>& inputs, const std::string& model_path, int vocab_size);

  // The options train() gives SentencePiece (LLaMA-style ids: unk 0, bos 1, eos 2, no pad;
  // BPE; byte fallback), as key -> value; exposed for the tests.
  static std::vector<std::pair<std::string, std::string>> training_options(int vocab_size);

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace moepp
