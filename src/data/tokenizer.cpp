#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/stat.h>

#include <fstream>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"

namespace moepp {

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  // SentencePiece reads the whole file: a device or a pipe (/dev/zero) would never end.
  struct stat st;
  MOEPP_CHECK(::stat(model_path.c_str(), &st) == 0, model_path, ": cannot open the SentencePiece model: no such file");
  MOEPP_CHECK(S_ISREG(st.st_mode), model_path, ": not a SentencePiece model (not a regular file)");
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

std::vector<int32_t> Tokenizer::encode_prompt(const std::string& text) const {
  std::vector<int32_t> ids;
  if (bos_id() >= 0) ids.push_back(bos_id());
  const std::vector<int32_t> body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_special_pieces(const std::string& text) const {
  std::vector<std::pair<std::string, int32_t>> specials;
  for (int32_t id : {bos_id(), eos_id()})
    if (id >= 0 && !piece(id).empty()) specials.emplace_back(piece(id), id);
  std::vector<int32_t> out;
  size_t at = 0;
  while (true) {
    // The nearest special piece from `at` on.
    size_t next = std::string::npos;
    const std::pair<std::string, int32_t>* found = nullptr;
    for (const auto& sp : specials) {
      const size_t where = text.find(sp.first, at);
      if (where < next) {
        next = where;
        found = &sp;
      }
    }
    const std::string part = text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    if (!part.empty()) {
      const std::vector<int32_t> ids = encode(part);
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (!found) return out;
    out.push_back(found->second);
    at = next + found->first.size();
  }
}

std::vector<int32_t> Tokenizer::encode_chat_prompt(const std::string& text) const {
  std::vector<int32_t> ids = encode_with_special_pieces(text);
  if (bos_id() >= 0 && (ids.empty() || ids.front() != bos_id())) ids.insert(ids.begin(), bos_id());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
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

std::vector<std::pair<std::string, std::string>> Tokenizer::training_options(int vocab_size) {
  // The options moepp has always trained with, minus input and model_prefix: the sentences
  // come from an iterator and the model back as bytes.
  return {{"vocab_size", std::to_string(vocab_size)},
          {"model_type", "bpe"},
          {"character_coverage", "1.0"},
          {"byte_fallback", "true"},
          {"unk_id", "0"},
          {"bos_id", "1"},
          {"eos_id", "2"},
          {"pad_id", "-1"},
          {"input_sentence_size", "2000000"},
          {"shuffle_input_sentence", "true"},
          {"max_sentence_length", "16384"},
          {"num_threads", "2"},
          {"minloglevel", "2"}};
}

namespace {

// The lines of the files, in order, as SentencePiece's own file reader would give them
// (std::getline: the '\n' removed, nothing else). A read error ends the iteration with a
// status naming the file.
class FileLines : public sentencepiece::SentenceIterator {
 public:
  explicit FileLines(const std::vector<std::string>& files) : files_(files) { Next(); }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return status_; }
  void Next() override {
    while (!done_) {
      if (in_.is_open() && std::getline(in_, line_)) return;
      if (in_.is_open()) {
        if (in_.bad()) return stop(files_[next_ - 1] + ": read error while training the tokenizer");
        in_.close();
      }
      if (next_ == files_.size()) {
        done_ = true;
        return;
      }
      in_.open(files_[next_++], std::ios::binary);
      if (!in_) return stop(files_[next_ - 1] + ": cannot open input file");
    }
  }

 private:
  void stop(const std::string& why) {
    status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, why);
    done_ = true;
  }
  const std::vector<std::string>& files_;
  size_t next_ = 0;
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

}  // namespace

void Tokenizer::train(const std::vector<std::string>& inputs, const std::string& model_path, int vocab_size) {
  MOEPP_CHECK(!inputs.empty(), "tokenizer training: no input files");
  // Byte fallback reserves 256 byte pieces besides unk/bos/eos and the characters seen.
  MOEPP_CHECK(vocab_size > 259, "tokenizer training: --vocab-size ", vocab_size,
              " is too small: byte fallback needs 259 pieces plus one per distinct character");
  std::unordered_map<std::string, std::string> options;
  for (const auto& [k, v] : training_options(vocab_size)) options[k] = v;
  FileLines lines(inputs);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(options, &lines, &model);
  MOEPP_CHECK(lines.status().ok(), lines.status().message());
  MOEPP_CHECK(status.ok(), "tokenizer training failed: ", status.ToString());
  MOEPP_CHECK(!model.empty(), "tokenizer training failed: SentencePiece returned no model");
  write_file_atomic(model_path, model);
}

}  // namespace moepp
