// What a prepared data folder records about itself (data.json, written by `moepp prepare`
// beside tokenizer.model, train.bin and val.bin): the size and digest of the tokenizer the
// shards were encoded with, and the token counts. Token ids mean nothing without their
// tokenizer, so `train` and `eval` check a model's tokenizer against this record and
// refuse a mismatch instead of reporting a loss over the wrong pieces.
#pragma once
#include <cstdint>
#include <string>

#include "io/digest.h"

namespace moepp {

constexpr const char* kDataManifestName = "data.json";

struct DataManifest {
  FileStamp tokenizer;
  int vocab_size = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
};

void write_data_manifest(const std::string& dir, const DataManifest& m);

// Throws when the tokenizer at `tokenizer_path` is not the one `data_dir` was encoded with.
// The reference is data.json's record or, in a folder from before data.json, the folder's
// own tokenizer.model; a folder with neither (synthetic token data) and a missing
// `tokenizer_path` have nothing to compare. `who` starts the message ("eval", "train").
void check_data_tokenizer(const std::string& data_dir, const std::string& tokenizer_path, const std::string& who);

}  // namespace moepp
