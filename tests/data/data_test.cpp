// Token shards, corpus checks, the data folder's tokenizer record and the loader.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "core/error.h"
#include "data/corpus.h"
#include "data/data_folder.h"
#include "data/loader.h"
#include "data/shards.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
std::string tmp(const std::string& name) {
  return test::scratch_dir("moepp-data") + "/" + name;
}
}  // namespace

TEST(Shards, RoundTripInTwoAndFourByteWidths) {
  const std::string p = tmp("a.bin");
  const std::vector<int32_t> small = {0, 1, 65535, 7}, large = {0, 65536, 1 << 30};
  write_token_shard(p, small);
  EXPECT_EQ(read_token_shard(p), small);
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  EXPECT_EQ(int(in.tellg()), 32 + 4 * 2);
  write_token_shard(p, large);
  EXPECT_EQ(read_token_shard(p), large);
}

TEST(Shards, TruncatedOrForeignFilesAreClearErrors) {
  const std::string p = tmp("t.bin");
  write_token_shard(p, {1, 2, 3, 4});
  std::string bytes;
  {
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(p, std::ios::binary) << bytes.substr(0, bytes.size() - 1);
  expect_error_mentioning([&] { read_token_shard(p); }, "header says 4 tokens of 2 bytes");
  std::ofstream(p, std::ios::binary) << "NOTTOKENS" << std::string(40, '\0');
  expect_error_mentioning([&] { read_token_shard(p); }, "bad magic");
}

TEST(Corpus, EmptyAndNonUtf8InputsAreRejected) {
  const std::string empty = tmp("empty.txt"), bad = tmp("bad.txt");
  std::ofstream(empty) << "  \n\n";
  std::ofstream(bad) << "fine text\n" << char(0xC3) << char(0x28) << "\n";
  PrepareOptions o;
  o.out_dir = tmp("out");
  o.inputs = {empty};
  expect_error_mentioning([&] { prepare_corpus(o); }, "the corpus file is empty");
  o.inputs = {bad};
  expect_error_mentioning([&] { prepare_corpus(o); }, "invalid UTF-8 at byte 10");
}

TEST(Loader, SeededOrderIsDeterministicAndSeekResumesIt) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  Loader a(tokens, 3, 10, 7), b(tokens, 3, 10, 7), c(tokens, 3, 10, 8);
  std::vector<int32_t> ia, ta, ib, tb, ic, tc;
  for (int step = 0; step < 50; ++step) {  // crosses epoch boundaries (99 chunks)
    a.next(ia, ta);
    b.next(ib, tb);
    EXPECT_EQ(ia, ib);
    for (size_t i = 0; i < ia.size(); ++i) EXPECT_EQ(ta[i], ia[i] + 1) << "targets are the next tokens";
  }
  c.next(ic, tc);
  a.seek(LoaderPosition{0, 0});
  a.next(ia, ta);
  EXPECT_NE(ia, ic) << "another seed, another order";
  const LoaderPosition mid = b.position();
  b.next(ib, tb);
  Loader d(tokens, 3, 10, 7);
  d.seek(mid);
  d.next(ic, tc);
  EXPECT_EQ(ib, ic);
}

// The tokenizer check compares bytes, so any two files of different content stand in for
// two tokenizers here.
TEST(DataFolder, AModelTokenizerMustBeTheOneTheDataWasPreparedWith) {
  const std::string dir = tmp("data");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  const std::string mine = dir + "/../mine.model", other = dir + "/../other.model";
  std::ofstream(mine) << "tokenizer A";
  std::ofstream(other) << "tokenizer B, a different one";
  // Nothing to compare with: a synthetic folder with shards only.
  EXPECT_NO_THROW(check_data_tokenizer(dir, other, "eval"));
  // A folder from before data.json: its own tokenizer.model is the reference.
  std::ofstream(dir + "/tokenizer.model") << "tokenizer A";
  EXPECT_NO_THROW(check_data_tokenizer(dir, mine, "eval"));
  expect_error_mentioning([&] { check_data_tokenizer(dir, other, "eval"); }, "is not the tokenizer " + dir);
  // With data.json: its record is the reference, and the folder's own copy must match it.
  write_data_manifest(dir, DataManifest{file_stamp(mine), 300, 10, 2});
  EXPECT_NO_THROW(check_data_tokenizer(dir, mine, "train"));
  expect_error_mentioning([&] { check_data_tokenizer(dir, other, "train"); }, "data.json records 11 bytes");
  std::ofstream(dir + "/tokenizer.model") << "tokenizer B, a different one";
  expect_error_mentioning([&] { check_data_tokenizer(dir, mine, "train"); }, "the shards no longer match it");
  // A missing model tokenizer (a folder of token ids only) is not compared.
  EXPECT_NO_THROW(check_data_tokenizer(dir + "/../elsewhere", dir + "/../none.model", "eval"));
}
