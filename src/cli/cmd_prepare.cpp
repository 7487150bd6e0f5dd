// moepp prepare: text files -> tokenizer.model + train.bin + val.bin, replaced as one set
// (docs/robustness.md, "prepare").
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"

namespace moepp::cli {

void add_prepare(CLI::App& app) {
  auto* cmd = app.add_subcommand("prepare", "Tokenize text files into token shards (trains a SentencePiece model unless --tokenizer)");
  auto opt = std::make_shared<PrepareOptions>();
  cmd->add_option("--input", opt->inputs, "UTF-8 text files")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", opt->out_dir, "Output folder (train.bin, val.bin, tokenizer.model, data.json)")->required();
  auto* vs = cmd->add_option("--vocab-size", opt->vocab_size, "Vocabulary size of the trained tokenizer")->default_val(8000);
  cmd->add_option("--tokenizer", opt->tokenizer_model, "Reuse this tokenizer.model instead of training one")
      ->check(CLI::ExistingFile)->excludes(vs);
  cmd->add_option("--val-fraction", opt->val_fraction, "Fraction of tokens held out for validation")->default_val(0.02);
  cmd->callback([opt] {
    std::fprintf(stderr, "prepare: %zu input file(s) -> %s\n", opt->inputs.size(), opt->out_dir.c_str());
    const PrepareResult r = prepare_corpus(*opt);
    // One JSON line; the path goes through the JSON writer (it may hold quotes or backslashes).
    const std::string out = nlohmann::json(opt->out_dir).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("{\"train_tokens\": %zu, \"val_tokens\": %zu, \"vocab_size\": %d, \"out\": %s}\n", r.train_tokens,
                r.val_tokens, r.vocab_size, out.c_str());
  });
}

}  // namespace moepp::cli
