// Corpus preparation (`moepp prepare`): read text files (checked to be non-empty UTF-8),
// train or reuse a SentencePiece model, encode line by line with an end-of-sequence id
// between documents, hold out a validation tail, write train.bin / val.bin / tokenizer.model
// and data.json (data/data_folder.h: which tokenizer the shards were encoded with).
//
// The four files are one set, written atomically as a set (docs/robustness.md, "prepare"):
// everything is written into a fresh sibling folder "OUT.tmp-PID.N" and, only when all
// four are complete and synced, that folder takes OUT's place (an atomic exchange of the
// two folders where the file system has one, else rename-aside / rename-in); the previous
// set is then removed. A reader sees the old set or the new one, never a mix; a failure
// or a crash at any point leaves an existing OUT as it was. Because OUT is replaced whole,
// prepare refuses an OUT that holds anything it did not write. Leftover "OUT.tmp-PID.N" /
// "OUT.old-PID.N" folders of processes no longer running are removed.
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

// Whether `name` is a file prepare writes into its folder (tokenizer.model, train.bin,
// val.bin, data.json) or the leftover of an interrupted write of one ("train.bin.tmp-PID", and the
// "tokenizer.tmp.model" / ".vocab" of earlier versions).
bool prepare_owns_file_name(const std::string& name);

}  // namespace moepp
