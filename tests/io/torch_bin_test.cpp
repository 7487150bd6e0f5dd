// pytorch_model.bin through the restricted unpickler, against files written by torch.save
// (tools/reference/torch_bin_fixtures.py) and the same tensors saved as safetensors; and
// one clear error per malformed or malicious file, with nothing executed.
#include "io/torch_bin.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

std::string fx(const std::string& rel) { return std::string(MOEPP_FIXTURES_DIR) + "/torch_bin/" + rel; }

void expect_same_as_expected(TorchBinFile& f, const std::string& expected) {
  const SafetensorsFile e(expected);
  EXPECT_EQ(f.tensors().size(), e.entries().size());
  for (const auto& [name, entry] : e.entries()) {
    ASSERT_TRUE(f.has(name)) << name;
    const auto got = f.read_f32(name);
    const auto want = e.read<float>(name);
    ASSERT_EQ(got.shape(), want.shape()) << name;
    for (int64_t i = 0; i < want.numel(); ++i) EXPECT_EQ(got[i], want[i]) << name << "[" << i << "]";
  }
}


}  // namespace

TEST(TorchBin, F32StateDictWithViewsOffsetsSharedStoragesAndScalars) {
  TorchBinFile f(fx("f32/pytorch_model.bin"));
  expect_same_as_expected(f, fx("f32/expected.safetensors"));
  const auto& t = f.ref("a.transposed");
  EXPECT_EQ(t.stride, (std::vector<int64_t>{1, 5})) << "a strided view, gathered on read";
  EXPECT_EQ(f.ref("a.offset").offset, 2);
  EXPECT_EQ(f.ref("a.offset").storage_key, f.ref("a.shared").storage_key);
}

TEST(TorchBin, Bf16AndF16Tensors) {
  TorchBinFile f(fx("bf16/pytorch_model.bin"));
  expect_same_as_expected(f, fx("bf16/expected.safetensors"));
  EXPECT_EQ(f.ref("w1").dtype, DType::bf16);
  EXPECT_EQ(f.ref("h").dtype, DType::f16);
}

TEST(TorchBin, ShardsFollowTheIndex) {
  TorchBinShards s(fx("sharded"));
  const SafetensorsFile e(fx("sharded/expected.safetensors"));
  EXPECT_EQ(s.names().size(), e.entries().size());
  for (const auto& [name, entry] : e.entries()) {
    const auto got = s.read_f32(name);
    const auto want = e.read<float>(name);
    EXPECT_EQ(rel_error(got, want), 0.0) << name;
  }
}

TEST(TorchBinBadInput, DisallowedGlobalIsRefusedAndNothingRuns) {
  std::remove("/tmp/moepp_pwned");
  expect_error_mentioning([] { TorchBinFile f(fx("bad/os_system.bin")); }, "global os.system is not allowed");
  struct stat st;
  EXPECT_NE(::stat("/tmp/moepp_pwned", &st), 0) << "the payload must never run";
}

TEST(TorchBinBadInput, UnknownOpcode) {
  expect_error_mentioning([] { TorchBinFile f(fx("bad/unknown_opcode.bin")); }, "is not allowed in a state dict");
}

TEST(TorchBinBadInput, TruncatedArchive) {
  expect_error_mentioning([] { TorchBinFile f(fx("bad/truncated.bin")); }, "truncated");
}

TEST(TorchBinBadInput, StorageShorterThanItsTensor) {
  expect_error_mentioning([] { TorchBinFile f(fx("bad/short_storage.bin")); }, "holds 8 f32 elements but the pickle says 16");
}

TEST(TorchBinBadInput, IndexNamingAMissingShard) {
  expect_error_mentioning([] { TorchBinShards s(fx("bad/missing_shard")); },
               "names shard pytorch_model-00002-of-00002.bin");
}
