// Files written piece by piece: the digest of a stream equals the digest of the whole, an
// unfinished atomic write leaves nothing behind, and write_safetensors streams its tensors
// (the same file from bytes in memory or from fills; the peak resident set grows by about
// one tensor, not by the file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/digest.h"
#include "io/safetensors.h"
#include "resident_memory.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

std::string temp_dir() {
  return test::scratch_dir("moepp-stream");
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(rng.next_u64() >> 56);
  return b;
}

}  // namespace

TEST(DigestStream, EqualsTheDigestOfTheWholeForAnySplit) {
  const auto bytes = random_bytes((size_t(7) << 19) + 13, 1);  // 3.5 MB and an odd tail
  const uint64_t whole = digest_bytes(bytes.data(), bytes.size());
  const std::vector<std::vector<size_t>> splits = {
      {bytes.size()},
      {1, 7, (size_t(1) << 20) - 8, size_t(2) << 20},  // ends on a chunk boundary, then the rest
      {(size_t(1) << 20) + 1, 5},
      {100000, 100000, 100000, 100000, 100000, 100000, 100000, 100000, 100000, 100000, 100000}};
  for (const auto& sizes : splits) {
    DigestStream d;
    size_t at = 0;
    for (size_t s : sizes) {
      s = std::min(s, bytes.size() - at);
      d.update(bytes.data() + at, s);
      at += s;
    }
    d.update(bytes.data() + at, bytes.size() - at);
    EXPECT_EQ(d.size(), bytes.size());
    EXPECT_EQ(d.finish(), whole) << "split starting " << sizes.front();
  }
  EXPECT_EQ(DigestStream().finish(), digest_bytes(nullptr, 0));
  DigestStream one;
  one.update(bytes.data(), 1);
  EXPECT_NE(one.finish(), DigestStream().finish());
}

TEST(AtomicFileWriter, LeavesNothingUntilCommittedAndTheOldFileUntilThen) {
  const std::string dir = temp_dir(), path = dir + "/f.bin";
  write_file_atomic(path, "old");
  {
    AtomicFileWriter w(path);
    w.append("new ", 4);
    EXPECT_EQ(read_all(path), "old");  // readers still see the old file
  }  // destroyed without commit: as an exception on the way would
  EXPECT_EQ(read_all(path), "old");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1) << "a temporary was left";
  AtomicFileWriter w(path);
  w.append("new ", 4);
  w.append("file", 4);
  w.commit();
  EXPECT_EQ(read_all(path), "new file");
  EXPECT_THROW(w.append("x", 1), Error);
  std::filesystem::remove_all(dir);
}

TEST(SafetensorsWriter, FilledTensorsGiveTheSameFileAsTensorsInMemory) {
  const std::string dir = temp_dir();
  const std::vector<float> a = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x4040};
  const FileStamp from_memory = write_safetensors(dir + "/m.safetensors", {{"a", DType::f32, {2, 3}, a.data()},
                                                                          {"b", DType::bf16, {3}, b.data()}});
  const FileStamp from_fills = write_safetensors(
      dir + "/f.safetensors",
      {{"a", DType::f32, {2, 3}, [&](void* out) { std::copy(a.begin(), a.end(), static_cast<float*>(out)); }},
       {"b", DType::bf16, {3}, [&](void* out) { std::copy(b.begin(), b.end(), static_cast<uint16_t*>(out)); }}});
  EXPECT_EQ(read_all(dir + "/m.safetensors"), read_all(dir + "/f.safetensors"));
  const FileStamp on_disk = file_stamp(dir + "/f.safetensors");
  EXPECT_EQ(from_fills.bytes, on_disk.bytes);
  EXPECT_EQ(from_fills.digest, on_disk.digest);
  EXPECT_EQ(from_memory.digest, on_disk.digest);
  const SafetensorsFile f(dir + "/f.safetensors");
  const auto back = f.read<float>("a");
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(back[int64_t(i)], a[i]);
  EXPECT_EQ(f.read<float>("b")[1], -2.0f);
  std::filesystem::remove_all(dir);
}

TEST(SafetensorsWriter, PeakGrowsByOneTensorNotByTheFile) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer keeps freed memory in quarantine: the resident set says nothing here";
#endif
  const std::string dir = temp_dir();
  constexpr size_t kFloats = size_t(8) << 20;  // 32 MB a tensor
  std::vector<std::vector<float>> tensors(4, std::vector<float>(kFloats));
  for (size_t t = 0; t < tensors.size(); ++t) std::iota(tensors[t].begin(), tensors[t].end(), float(t));
  std::vector<SafetensorsWriteItem> items;
  for (size_t t = 0; t < tensors.size(); ++t) {
    items.push_back({"in_memory." + std::to_string(t), DType::f32, {int64_t(kFloats)}, tensors[t].data()});
    items.push_back({"filled." + std::to_string(t), DType::f32, {int64_t(kFloats)}, [&, t](void* out) {
                       auto* f = static_cast<float*>(out);
                       for (size_t i = 0; i < kFloats; ++i) f[i] = 2.0f * tensors[t][i];
                     }});
  }
  if (!reset_peak_resident()) GTEST_SKIP() << "no /proc/self/clear_refs to reset the peak";
  const int64_t before = status_bytes("VmRSS");
  const FileStamp stamp = write_safetensors(dir + "/big.safetensors", items);
  const int64_t growth = status_bytes("VmHWM") - before;
  ASSERT_GT(before, 0);
  const int64_t tensor_bytes = int64_t(kFloats * sizeof(float));
  EXPECT_EQ(stamp.bytes, file_stamp(dir + "/big.safetensors").bytes);
  EXPECT_GT(int64_t(stamp.bytes), 8 * tensor_bytes);
  // One filled tensor, one chunk of the digest and the allocator's slack: far below the
  // 256 MB file that writing from one buffer held.
  EXPECT_LE(growth, tensor_bytes + (int64_t(16) << 20)) << "peak grew by " << growth / 1e6 << " MB";
  const SafetensorsFile f(dir + "/big.safetensors");
  EXPECT_EQ(f.read<float>("filled.3")[1000], 2.0f * (3.0f + 1000.0f));
  std::filesystem::remove_all(dir);
}
