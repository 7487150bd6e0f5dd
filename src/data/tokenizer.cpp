#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "core/error.h"

namespace moepp {

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  const auto status = sp_->Load(model_path);
  MOEPP_CHECK(status.ok(), model_path, ": cannot load the SentencePiece model: ", status.ToString());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  MOEPP_CHECK(status.ok(), path_, ": encoding failed: ", status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  const std::vector<int> in(ids.begin(), ids.end());
  const auto status = sp_->Decode(in, &text);
  MOEPP_CHECK(status.ok(), path_, ": decoding failed: ", status.ToString());
  return text;
}

std::string Tokenizer::piece(int32_t id) const { return sp_->IdToPiece(id); }
int32_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int32_t Tokenizer::eos_id() const { return sp_->eos_id(); }

void Tokenizer::train(const std::vector<std::string>& inputs, const std::string& prefix, int vocab_size) {
  MOEPP_CHECK(!inputs.empty(), "tokenizer training: no input files");
  // Byte fallback reserves 256 byte pieces besides unk/bos/eos and the characters seen.
  MOEPP_CHECK(vocab_size > 259, "tokenizer training: --vocab-size ", vocab_size,
              " is too small: byte fallback needs 259 pieces plus one per distinct character");
  std::string files;
  for (const auto& f : inputs) files += (files.empty() ? "" : ",") + f;
  // LLaMA-style ids: unk 0, bos 1, eos 2, no pad; byte fallback so any UTF-8 round-trips.
  const std::string args = "--input=" + files + " --model_prefix=" + prefix +
                           " --vocab_size=" + std::to_string(vocab_size) +
                           " --model_type=bpe --character_coverage=1.0 --byte_fallback=true"
                           " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
                           " --input_sentence_size=2000000 --shuffle_input_sentence=true"
                           " --max_sentence_length=16384 --num_threads=2 --minloglevel=2";
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  MOEPP_CHECK(status.ok(), "tokenizer training failed: ", status.ToString());
}

}  // namespace moepp
