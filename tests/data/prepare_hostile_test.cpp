// `prepare` against hostile paths and failures: names with spaces, commas and flag-like
// text reach no flag parser; a file that is not a tokenizer, an input that fails midway or
// a corpus that turns out too small leave an earlier OUT exactly as it was and nothing
// beside it; a re-prepare replaces tokenizer.model, train.bin, val.bin and data.json together; dead
// processes' temporaries are removed. The outcomes checked are file contents, token
// counts and error texts.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/corpus.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "io/digest.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;
namespace fs = std::filesystem;

namespace {

// A fresh folder whose own name has spaces and a comma, removed with the test.
struct TmpDir {
  std::string path;
  TmpDir() {
    char t[] = "/tmp/moepp prepare, hostile-XXXXXX";
    path = mkdtemp(t);
  }
  ~TmpDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  operator const std::string&() const { return path; }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Numbered sentences with a word of their own, so that two corpora tokenize differently.
std::string corpus(const std::string& word, int lines) {
  std::string s;
  for (int i = 1; i <= lines; ++i)
    s += "Line " + std::to_string(i) + ": the quick brown " + word + " jumps over the lazy dog number " +
         std::to_string(i % 17) + ".\n";
  return s;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The four files of a prepared folder, by name.
std::map<std::string, std::string> prepared_set(const std::string& out) {
  return {{"data.json", slurp(out + "/data.json")},
          {"tokenizer.model", slurp(out + "/tokenizer.model")},
          {"train.bin", slurp(out + "/train.bin")},
          {"val.bin", slurp(out + "/val.bin")}};
}

// What prepare must have produced from these files with this tokenizer: every non-blank
// line encoded with its '\n', an end-of-sequence id after each file.
std::vector<int32_t> expected_tokens(const std::vector<std::string>& files, const Tokenizer& tok) {
  std::vector<int32_t> all;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto ids = tok.encode(line + "\n");
      all.insert(all.end(), ids.begin(), ids.end());
    }
    all.push_back(tok.eos_id());
  }
  return all;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A good OUT to be kept intact by the failures below.
std::string prepared_out(const std::string& dir, int vocab = 320) {
  write(dir + "/good.txt", corpus("fox", 300));
  PrepareOptions o;
  o.inputs = {dir + "/good.txt"};
  o.out_dir = dir + "/out";
  o.vocab_size = vocab;
  prepare_corpus(o);
  return o.out_dir;
}

}  // namespace

// The trainer gets the sentences from moepp and the options as key/value pairs; the model
// must be the one SentencePiece trains from the same file through its own flag string.
TEST(PrepareHostile, TrainsTheSameTokenizerAsTheFlagStringDid) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  const std::string safe = "/tmp/moepp-spm-" + std::to_string(getpid());
  write(safe + ".txt", corpus("fox", 300) + "Ünïcödé and 漢字 and emoji 🙂 once.\n");
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + safe + ".txt --model_prefix=" + safe +
      " --vocab_size=400 --model_type=bpe --character_coverage=1.0 --byte_fallback=true"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --input_sentence_size=2000000"
      " --shuffle_input_sentence=true --max_sentence_length=16384 --num_threads=2 --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();
  Tokenizer::train({safe + ".txt"}, dir + "/tokenizer.model", 400);
  sentencepiece::SentencePieceProcessor a, b;
  ASSERT_TRUE(a.Load(safe + ".model").ok());
  ASSERT_TRUE(b.Load(dir + "/tokenizer.model").ok());
  ASSERT_EQ(a.GetPieceSize(), 400);
  ASSERT_EQ(b.GetPieceSize(), 400);
  for (int i = 0; i < 400; ++i) {
    EXPECT_EQ(a.IdToPiece(i), b.IdToPiece(i)) << "piece " << i;
    EXPECT_EQ(a.GetScore(i), b.GetScore(i)) << "piece " << i;
  }
  EXPECT_EQ(b.unk_id(), 0);
  EXPECT_EQ(b.bos_id(), 1);
  EXPECT_EQ(b.eos_id(), 2);
  EXPECT_EQ(b.pad_id(), -1);
  const std::string text = "The quick brown fox 🙂 and ☃ (unseen) jumps.";
  std::vector<int> ia, ib;
  ASSERT_TRUE(a.Encode(text, &ia).ok());
  ASSERT_TRUE(b.Encode(text, &ib).ok());
  EXPECT_EQ(ia, ib);
  std::string back;
  ASSERT_TRUE(b.Decode(ib, &back).ok());
  EXPECT_EQ(back, text) << "byte fallback round-trips unseen characters";
  for (const char* ext : {".txt", ".model", ".vocab"}) std::remove((safe + ext).c_str());
}

TEST(PrepareHostile, PathsWithSpacesCommasAndFlagLikeNamesAreJustNames) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  const std::string a = dir + "/--model_prefix=evil --vocab_size=5.txt";
  const std::string b = dir + "/x, --input=etc-passwd,y.txt";
  write(a, corpus("fox", 200));
  write(b, corpus("cat", 150));
  PrepareOptions o;
  o.inputs = {a, b};
  o.out_dir = dir + "/out, with spaces";
  o.vocab_size = 400;
  const PrepareResult r = prepare_corpus(o);
  EXPECT_EQ(r.vocab_size, 400) << "--vocab_size=5 in a file name must not reach the trainer";
  const Tokenizer tok(o.out_dir + "/tokenizer.model");
  EXPECT_EQ(tok.vocab_size(), 400);
  const auto all = expected_tokens({a, b}, tok);
  const auto train = read_token_shard(o.out_dir + "/train.bin"), val = read_token_shard(o.out_dir + "/val.bin");
  EXPECT_EQ(r.train_tokens, train.size());
  EXPECT_EQ(r.val_tokens, val.size());
  EXPECT_EQ(concat(train, val), all) << "both files, in order, were encoded";
  EXPECT_EQ(val.size(), size_t(double(all.size()) * 0.02));
  EXPECT_NE(tok.decode(all).find("brown cat jumps"), std::string::npos) << "the file with commas was read";
  // No model anywhere under the evil prefix, no path in the model, nothing else written.
  EXPECT_FALSE(fs::exists("evil.model"));
  EXPECT_FALSE(fs::exists(dir + "/evil.model"));
  const std::string model = slurp(o.out_dir + "/tokenizer.model");
  EXPECT_EQ(model.find("evil"), std::string::npos);
  EXPECT_EQ(model.find("hostile"), std::string::npos) << "the trainer never saw a path";
  EXPECT_EQ(names_in(o.out_dir), (std::vector<std::string>{"data.json", "tokenizer.model", "train.bin", "val.bin"}));
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{fs::path(a).filename().string(), "out, with spaces",
                                                     fs::path(b).filename().string()}));

  // The same folder prepared again with its own tokenizer (a path with spaces as --tokenizer).
  PrepareOptions again = o;
  again.tokenizer_model = o.out_dir + "/tokenizer.model";
  const PrepareResult r2 = prepare_corpus(again);
  EXPECT_EQ(r2.train_tokens, r.train_tokens);
  EXPECT_TRUE(slurp(o.out_dir + "/tokenizer.model") == model);
  EXPECT_EQ(read_token_shard(o.out_dir + "/train.bin"), train);
}

TEST(PrepareHostile, NotATokenizerFailsNamingTheFileAndLeavesNothing) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  write(dir + "/c.txt", corpus("fox", 100));
  write(dir + "/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n");
  PrepareOptions o;
  o.inputs = {dir + "/c.txt"};
  o.out_dir = dir + "/new/out";
  for (const std::string& bad : {dir + "/passwd", std::string("/etc/passwd"), std::string("/dev/null")}) {
    if (!fs::exists(bad)) continue;
    o.tokenizer_model = bad;
    expect_error_mentioning([&] { prepare_corpus(o); }, "--tokenizer " + bad + " is not a usable SentencePiece model");
    EXPECT_EQ(names_in(dir), (std::vector<std::string>{"c.txt", "passwd"})) << "nothing created for " << bad;
  }
  o.tokenizer_model = dir + "/passwd";
  expect_error_mentioning([&] { prepare_corpus(o); }, dir + "/passwd: cannot load the SentencePiece model");
  o.tokenizer_model = "/dev/null";
  expect_error_mentioning([&] { prepare_corpus(o); }, "/dev/null: not a SentencePiece model (not a regular file)");

  // Into an existing good OUT: it stays exactly as it was, no bad tokenizer.model in it.
  const std::string out = prepared_out(dir);
  const auto before = prepared_set(out);
  o.out_dir = out;
  o.tokenizer_model = dir + "/passwd";
  expect_error_mentioning([&] { prepare_corpus(o); }, dir + "/passwd");
  EXPECT_TRUE(prepared_set(out) == before);
  EXPECT_EQ(names_in(out), (std::vector<std::string>{"data.json", "tokenizer.model", "train.bin", "val.bin"}));
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"c.txt", "good.txt", "out", "passwd"}));
}

TEST(PrepareHostile, AFailureMidwayLeavesTheEarlierOutIntact) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  const std::string out = prepared_out(dir);
  const auto before = prepared_set(out);
  const auto expect_intact = [&](const std::string& what) {
    EXPECT_TRUE(prepared_set(out) == before) << what;
    EXPECT_EQ(names_in(out), (std::vector<std::string>{"data.json", "tokenizer.model", "train.bin", "val.bin"})) << what;
    for (const auto& n : names_in(dir))
      EXPECT_EQ(n.find(".tmp-"), std::string::npos) << what << ": left " << n;
  };
  write(dir + "/second.txt", corpus("cat", 100));
  PrepareOptions o;
  o.out_dir = out;
  o.vocab_size = 400;

  // The second input cannot be read (a folder), or is not UTF-8 past its first line.
  fs::create_directory(dir + "/unreadable.txt");
  o.inputs = {dir + "/second.txt", dir + "/unreadable.txt"};
  expect_error_mentioning([&] { prepare_corpus(o); }, dir + "/unreadable.txt: the input is not a regular file");
  expect_intact("unreadable second input");
  write(dir + "/latin1.txt", "fine first line\ncaf\xe9\n");
  o.inputs = {dir + "/second.txt", dir + "/latin1.txt"};
  expect_error_mentioning([&] { prepare_corpus(o); }, dir + "/latin1.txt: invalid UTF-8 at byte 19");
  expect_intact("non-UTF-8 second input");

  // Failures after files were written into the temporary folder: the trainer refusing
  // the vocabulary size, and a corpus found too small once the tokenizer is in place.
  o.inputs = {dir + "/second.txt"};
  o.vocab_size = 100000;
  expect_error_mentioning([&] { prepare_corpus(o); }, "Vocabulary size too high (100000)");
  expect_intact("vocabulary too large");
  write(dir + "/tiny.txt", "\x01\n");  // valid UTF-8, not blank, normalized to nothing
  o.inputs = {dir + "/tiny.txt"};
  o.tokenizer_model = out + "/tokenizer.model";
  expect_error_mentioning([&] { prepare_corpus(o); }, "prepare: the corpus is too small (1 tokens)");
  expect_intact("corpus too small");

  // OUT holding something prepare did not write is refused, not deleted.
  write(out + "/notes.txt", "mine");
  o.inputs = {dir + "/second.txt"};
  expect_error_mentioning([&] { prepare_corpus(o); }, "holds 'notes.txt', which prepare did not write");
  EXPECT_EQ(slurp(out + "/notes.txt"), "mine");
  EXPECT_TRUE(slurp(out + "/train.bin") == before.at("train.bin"));
  // An --out that is a file, a mount point, the current folder: refused before any work.
  o.out_dir = dir + "/second.txt";
  expect_error_mentioning([&] { prepare_corpus(o); }, "exists and is not a folder");
  o.out_dir = "/proc";
  expect_error_mentioning([&] { prepare_corpus(o); }, "--out /proc is a mount point");
  o.out_dir = ".";
  expect_error_mentioning([&] { prepare_corpus(o); }, "--out . is (or holds) the current folder");
}

TEST(PrepareHostile, RePrepareReplacesAllFourFilesTogether) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  const std::string out = prepared_out(dir, 320);
  const auto first = prepared_set(out);
  write(dir + "/cats.txt", corpus("cat", 250) + "Meow meow meow.\n");
  PrepareOptions o;
  o.inputs = {dir + "/cats.txt"};
  o.out_dir = out;
  o.vocab_size = 450;
  const PrepareResult r = prepare_corpus(o);
  const auto second = prepared_set(out);
  for (const auto& [name, bytes] : second) EXPECT_NE(bytes, first.at(name)) << name << " was not replaced";
  const Tokenizer tok(out + "/tokenizer.model");
  EXPECT_EQ(tok.vocab_size(), 450);
  const auto train = read_token_shard(out + "/train.bin"), val = read_token_shard(out + "/val.bin");
  EXPECT_EQ(train.size(), r.train_tokens);
  EXPECT_EQ(val.size(), r.val_tokens);
  EXPECT_EQ(concat(train, val), expected_tokens(o.inputs, tok)) << "the shards are the new tokenizer's encoding";
  const std::string text = tok.decode(concat(train, val));
  EXPECT_NE(text.find("Meow meow meow."), std::string::npos);
  EXPECT_EQ(text.find("fox"), std::string::npos) << "nothing of the first corpus is left";
  // data.json describes the new set: the new tokenizer's bytes and digest, the new counts.
  const auto manifest = nlohmann::json::parse(second.at("data.json"));
  const FileStamp stamp = file_stamp(out + "/tokenizer.model");
  EXPECT_EQ(manifest["tokenizer"]["bytes"].get<uint64_t>(), stamp.bytes);
  EXPECT_EQ(std::stoull(manifest["tokenizer"]["digest"].get<std::string>(), nullptr, 16), stamp.digest);
  EXPECT_EQ(manifest["vocab_size"].get<int>(), 450);
  EXPECT_EQ(manifest["train_tokens"].get<size_t>(), r.train_tokens);
  EXPECT_EQ(manifest["val_tokens"].get<size_t>(), r.val_tokens);
  EXPECT_EQ(names_in(out), (std::vector<std::string>{"data.json", "tokenizer.model", "train.bin", "val.bin"}));
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"cats.txt", "good.txt", "out"})) << "no temporary or old set left";
}

TEST(PrepareHostile, LeftoversOfDeadProcessesAreCleanedAndOthersKept) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  // A crash between rename-aside and rename-in: no OUT, the previous set aside.
  fs::rename(prepared_out(dir, 300), dir + "/out.old-999999995.0");
  write(dir + "/c.txt", corpus("fox", 200));
  // Process ids above the kernel's maximum (2^22) belong to no process.
  fs::create_directory(dir + "/out.tmp-999999991.0");
  write(dir + "/out.tmp-999999991.0/tokenizer.model", "half");
  write(dir + "/out.tmp-999999991.0/train.bin.tmp-999999991", "half");
  fs::create_directory(dir + "/out.tmp-999999992");  // an empty one, without the counter
  fs::create_directory(dir + "/out.tmp-999999993.0");  // not prepare's: kept
  write(dir + "/out.tmp-999999993.0/thesis.tex", "precious");
  fs::create_directory(dir + "/out.tmp-1.0");  // process 1 is alive: not ours to touch
  write(dir + "/out.tmp-1.0/train.bin", "in progress");
  fs::create_directory(dir + "/other.tmp-999999994.0");  // another OUT's
  PrepareOptions o;
  o.inputs = {dir + "/c.txt"};
  o.out_dir = dir + "/out";
  o.vocab_size = 400;
  prepare_corpus(o);
  EXPECT_EQ(Tokenizer(dir + "/out/tokenizer.model").vocab_size(), 400);
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"c.txt", "good.txt", "other.tmp-999999994.0", "out",
                                                     "out.tmp-1.0", "out.tmp-999999993.0"}));
  EXPECT_EQ(slurp(dir + "/out.tmp-999999993.0/thesis.tex"), "precious");
  EXPECT_EQ(slurp(dir + "/out.tmp-1.0/train.bin"), "in progress");
}

TEST(PrepareHostile, ACrashBetweenTheRenamesIsRepairedByTheNextPrepare) {
  const TmpDir tmp;
  const std::string& dir = tmp;
  const std::string out = prepared_out(dir);
  const auto before = prepared_set(out);
  fs::rename(out, dir + "/out.old-999999996.3");  // OUT gone, the previous set aside
  // The next prepare fails after the set was put back: OUT is the previous set again.
  write(dir + "/tiny.txt", "a\n");
  PrepareOptions o;
  o.inputs = {dir + "/tiny.txt"};
  o.out_dir = out;
  o.tokenizer_model = dir + "/good.txt";  // not a model: fails before anything is touched
  EXPECT_THROW(prepare_corpus(o), Error);
  EXPECT_FALSE(fs::exists(out)) << "a prepare that fails its checks touches nothing";
  o.tokenizer_model.clear();
  o.vocab_size = 100000;
  o.inputs = {dir + "/good.txt"};
  expect_error_mentioning([&] { prepare_corpus(o); }, "Vocabulary size too high");
  ASSERT_TRUE(fs::exists(out));
  EXPECT_TRUE(prepared_set(out) == before);
  EXPECT_EQ(names_in(dir), (std::vector<std::string>{"good.txt", "out", "tiny.txt"}));
}
