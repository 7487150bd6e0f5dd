// Token shards, corpus checks and the loader.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/shards.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
std::string tmp(const std::string& name) {
  char t[] = "/tmp/moepp-data-XXXXXX";
  return std::string(mkdtemp(t)) + "/" + name;
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
