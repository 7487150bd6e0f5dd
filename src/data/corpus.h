// Corpus preparation (`moepp prepare`): read text files (checked to be non-empty UTF-8),
// train or reuse a SentencePiece model, encode line by line with an end-of-sequence id
// between documents, hold out a validation tail, write train.bin / val.bin / tokenizer.model.
#pragma once
#include <string>
#include <vector>

namespace moepp {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  int vocab_size = 8000;        // when training a tokenizer
  std::string tokenizer_model;  // reuse this model instead of training
  double val_fraction = 0.02;
};

struct PrepareResult {
  size_t train_tokens = 0, val_tokens = 0;
  int vocab_size = 0;
};

PrepareResult prepare_corpus(const PrepareOptions& opt);

// Throws naming the file and byte offset of the first invalid UTF-8 sequence.
void check_utf8(const std::string& text, const std::string& source);

}  // namespace moepp
