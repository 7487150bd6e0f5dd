// Tokenizer: a SentencePiece model (tokenizer.model), trained by `moepp prepare` or taken
// from a Hugging Face folder. Owns the processor; encode/decode are thread-compatible.
#pragma once
#include <memory>
#include <string>
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
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;

  // Trains a BPE model of vocab_size pieces on the text files into "<prefix>.model".
  static void train(const std::vector<std::string>& inputs, const std::string& model_prefix, int vocab_size);

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace moepp
