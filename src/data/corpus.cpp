#include "data/corpus.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/model_folder.h"

namespace moepp {

void check_utf8(const std::string& s, const std::string& source) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    MOEPP_CHECK(len > 0 && i + size_t(len) <= s.size(), source, ": invalid UTF-8 at byte ", i);
    for (int k = 1; k < len; ++k)
      MOEPP_CHECK((static_cast<unsigned char>(s[i + size_t(k)]) >> 6) == 0x2, source, ": invalid UTF-8 at byte ", i);
    i += size_t(len);
  }
}

PrepareResult prepare_corpus(const PrepareOptions& opt) {
  MOEPP_CHECK(!opt.inputs.empty(), "prepare: no --input files");
  MOEPP_CHECK(opt.val_fraction > 0 && opt.val_fraction < 0.5, "prepare: --val-fraction ", opt.val_fraction,
              " must be in (0, 0.5)");
  for (const auto& f : opt.inputs) {
    std::ifstream in(f, std::ios::binary);
    MOEPP_CHECK(in, f, ": cannot open input file");
    std::ostringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    MOEPP_CHECK(text.find_first_not_of(" \t\r\n") != std::string::npos, f, ": the corpus file is empty");
    check_utf8(text, f);
  }
  make_dirs(opt.out_dir);
  const std::string model = opt.out_dir + "/tokenizer.model";
  if (!opt.tokenizer_model.empty()) {
    copy_file_atomic(opt.tokenizer_model, model);
  } else {
    const std::string prefix = opt.out_dir + "/tokenizer.tmp";
    Tokenizer::train(opt.inputs, prefix, opt.vocab_size);
    MOEPP_CHECK(std::rename((prefix + ".model").c_str(), model.c_str()) == 0, model, ": cannot move the trained model");
    std::remove((prefix + ".vocab").c_str());
  }
  const Tokenizer tok(model);
  std::vector<int32_t> tokens;
  for (const auto& f : opt.inputs) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto ids = tok.encode(line + "\n");
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    tokens.push_back(tok.eos_id() >= 0 ? tok.eos_id() : 0);
  }
  const size_t n_val = std::max<size_t>(1, size_t(double(tokens.size()) * opt.val_fraction));
  MOEPP_CHECK(tokens.size() > n_val + 1, "prepare: the corpus is too small (", tokens.size(), " tokens)");
  const std::vector<int32_t> train(tokens.begin(), tokens.end() - std::ptrdiff_t(n_val));
  const std::vector<int32_t> val(tokens.end() - std::ptrdiff_t(n_val), tokens.end());
  write_token_shard(opt.out_dir + "/train.bin", train);
  write_token_shard(opt.out_dir + "/val.bin", val);
  return PrepareResult{train.size(), val.size(), tok.vocab_size()};
}

}  // namespace moepp
