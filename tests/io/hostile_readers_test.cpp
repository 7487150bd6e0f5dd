// Hostile files against every reader (issue: nothing crashes): each file is crafted here,
// byte by byte, to hit one defect an attack found; each must give a clear moepp::Error
// naming the field and value, never a signal, an endless wait or a silent misreading.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "model/hf_folder.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "io/torch_pickle.h"
#include "io/zip_reader.h"
#include "model/config.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;
using namespace std::string_literals;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
  return s;
}

// A stored (uncompressed) zip archive as torch.save writes one.
std::string zip_of(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const uint64_t local = out.size();
    out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + le(data.size(), 4) +
           le(data.size(), 4) + le(name.size(), 2) + le(0, 2) + name + data;
    central += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) +
               le(data.size(), 4) + le(data.size(), 4) + le(name.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) +
               le(0, 2) + le(0, 4) + le(local, 4) + name;
  }
  const uint64_t cd_off = out.size();
  out += central;
  out += le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(entries.size(), 2) + le(entries.size(), 2) +
         le(central.size(), 4) + le(cd_off, 4) + le(0, 2);
  return out;
}

// Pickle pieces (protocol 2) for a one-tensor state dict.
std::string str(const std::string& s) {
  std::string out(1, 'X');  // appended, not "X" + ...: GCC 12 warns falsely (-Wrestrict) on that
  out += le(s.size(), 4);
  out += s;
  return out;
}
std::string int8(int64_t v) { return "\x8a\x08" + le(uint64_t(v), 8); }
std::string tensor_pickle(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t numel) {
  std::string p = "\x80\x02" "ccollections\nOrderedDict\n)R" + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n(";
  p += "(" + str("storage") + "ctorch\nFloatStorage\n" + str("0") + str("cpu") + int8(numel) + "tQ";
  p += int8(0) + "(";
  for (auto d : shape) p += int8(d);
  p += "t(";
  for (auto d : stride) p += int8(d);
  p += "t\x89tRs.";
  return p;
}

}  // namespace

TEST(HostileReaders, StrideThatWrapsInt64IsRefusedNotRead) {
  const std::string d = scratch_dir("moepp-hostile-stride");
  // [5, 2] with stride [2^62, 1]: 4 * 2^62 wraps to 0, so an unchecked extent is 1 < 4.
  const std::string p = tensor_pickle({5, 2}, {int64_t(1) << 62, 1}, 4);
  write_bytes(d + "/m.bin", zip_of({{"archive/data.pkl", p}, {"archive/data/0", std::string(16, '\0')}}));
  expect_error_mentioning([&] { TorchBinFile f(d + "/m.bin"); }, "overflows int64");
  // The same archive with an honest stride reads (the crafting itself is right).
  write_bytes(d + "/ok.bin", zip_of({{"archive/data.pkl", tensor_pickle({2, 2}, {2, 1}, 4)},
                                      {"archive/data/0", std::string(16, '\0')}}));
  TorchBinFile ok(d + "/ok.bin");
  EXPECT_EQ(ok.read_f32("w").shape(), (Shape{2, 2}));
}

TEST(HostileReaders, Zip64EndRecordOffsetNear2To64) {
  const std::string d = scratch_dir("moepp-hostile-zip64");
  std::string z = zip_of({{"a", "x"}});
  // Saturated 32-bit fields point at a zip64 record; its offset wraps `rec + 56`.
  const std::string locator = le(0x07064b50, 4) + le(0, 4) + le(~uint64_t(0) - 20, 8) + le(1, 4);
  const std::string eocd = le(0x06054b50, 4) + le(0, 4) + le(0xffff, 2) + le(0xffff, 2) + le(0xffffffffu, 4) +
                           le(0xffffffffu, 4) + le(0, 2);
  write_bytes(d + "/z.zip", z + locator + eocd);
  expect_error_mentioning([&] { ZipReader r(d + "/z.zip"); }, "bad zip64 end-of-central-directory record");
}

TEST(HostileReaders, ZipExtraFieldLengthPastItsBlock) {
  const std::string d = scratch_dir("moepp-hostile-extra");
  std::string z = zip_of({{"a", "x"}});
  // Give the central entry a 4-byte extra block whose field claims 65535 bytes.
  const size_t c = z.find(le(0x02014b50, 4));
  z[c + 30] = 4;
  z.insert(c + 46 + 1, le(0x0001, 2) + le(0xffff, 2));
  const size_t e = z.find(le(0x06054b50, 4));
  z.replace(e + 12, 4, le(46 + 1 + 4, 4));  // central directory size
  write_bytes(d + "/z.zip", z);
  expect_error_mentioning([&] { ZipReader r(d + "/z.zip"); }, "runs past the entry's extra block");
}

TEST(HostileReaders, ZipEntryOffsetNear2To64) {
  const std::string d = scratch_dir("moepp-hostile-local");
  std::string z = zip_of({{"a", "x"}});
  const size_t c = z.find(le(0x02014b50, 4));
  z.replace(c + 42, 4, le(0xffffffffu, 4));  // local header offset from the zip64 extra field
  z[c + 30] = 12;
  z.insert(c + 46 + 1, le(0x0001, 2) + le(8, 2) + le(~uint64_t(0) - 10, 8));
  const size_t e = z.find(le(0x06054b50, 4));
  z.replace(e + 12, 4, le(46 + 1 + 12, 4));
  write_bytes(d + "/z.zip", z);
  expect_error_mentioning([&] { ZipReader r(d + "/z.zip"); }, "bad local header offset");
}

TEST(HostileReaders, DeeplyNestedPickleIsRefusedWithoutRecursion) {
  // A megabyte of TUPLE1: a million levels, which a recursive teardown overflowed on.
  std::string p = "\x80\x02)" + std::string(1 << 20, '\x85') + ".";
  expect_error_mentioning(
      [&] { parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "deep.pkl"); },
      "values nested deeper than 32 levels");
}

TEST(HostileReaders, SelfReferencingPickleListIsRefusedWithoutLeak) {
  // list; memo it; append it to itself; STOP. (A shared_ptr cycle leaked here before.)
  const std::string p = "\x80\x02]q\x00h\x00" "a."s;
  expect_error_mentioning(
      [&] { parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "cycle.pkl"); },
      "does not hold a dict");
}

TEST(HostileReaders, PickleValueFloodStopsAtTheLimit) {
  // Each BINGET + TUPLE1 pair makes a new value for 3 bytes: far more than the limit.
  std::string p = "\x80\x02)q\x00("s;
  for (size_t i = 0; i < kPickleMaxValues + 10; ++i) p += "h\x00\x85"s;
  p += ".";
  expect_error_mentioning(
      [&] { parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "flood.pkl"); },
      "values (a state dict needs far fewer)");
}

TEST(HostileReaders, PickleOpcodeFloodStopsAtTheLimit) {
  // BINGET of one value pushes no new value: the opcode or stack limit stops it.
  std::string p = "\x80\x02)q\x00"s;
  for (size_t i = 0; i < kPickleMaxOps; ++i) p += "h\x00"s;
  p += ".";
  try {
    parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "ops.pkl");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("opcodes") != std::string::npos || m.find("the stack holds more than") != std::string::npos) << m;
  }
}

TEST(HostileReaders, SafetensorsHeaderPastTheLimit) {
  const std::string d = scratch_dir("moepp-hostile-st");
  write_bytes(d + "/big.safetensors", le(kSafetensorsMaxHeaderBytes + 8, 8) + std::string(kSafetensorsMaxHeaderBytes + 8, ' '));
  expect_error_mentioning([&] { SafetensorsFile f(d + "/big.safetensors"); }, "bytes moepp accepts");
}

TEST(HostileReaders, FifoNamedConfigJsonDoesNotBlock) {
  const std::string d = scratch_dir("moepp-hostile-fifo");
  ASSERT_EQ(::mkfifo((d + "/config.json").c_str(), 0644), 0);
  expect_error_mentioning([&] { read_json_file(d + "/config.json"); }, "not a regular file");
  ASSERT_EQ(::mkfifo((d + "/model.safetensors").c_str(), 0644), 0);
  expect_error_mentioning([&] { SafetensorsFile f(d + "/model.safetensors"); }, "not a regular file");
}

TEST(HostileReaders, JsonFilesAreObjectsWithoutNulBytes) {
  // Fuzzer finds (fuzz/crashes/config): a config.json that is JSON but no object escaped as
  // a nlohmann exception; a NUL byte ended the parse and the rest was ignored.
  const std::string d = scratch_dir("moepp-hostile-json");
  for (const std::string bad : {"[]", "2", "\"MoE++\"", "true"}) {
    write_bytes(d + "/config.json", bad);
    expect_error_mentioning([&] { read_hf_config(d); }, "config.json: config is not a JSON object");
  }
  write_bytes(d + "/config.json", std::string("{}\0{\"garbage\": 1}", 17));
  expect_error_mentioning([&] { read_json_file(d + "/config.json"); }, "a NUL byte at offset 2");
}

TEST(HostileReaders, IndexShardNamesArePlainFileNames) {
  // Fuzzer finds (fuzz/crashes/index): "" and "." name the folder itself.
  const std::string d = scratch_dir("moepp-hostile-index");
  for (const std::string bad : {"", ".", "..", "../x.safetensors"}) {
    write_bytes(d + "/model.safetensors.index.json", nlohmann::json{{"weight_map", {{"w", bad}}}}.dump());
    expect_error_mentioning([&] { read_weight_index(d, "model.safetensors.index.json"); },
                            "which is not a plain file name in the folder");
  }
  ::mkdir((d + "/sub").c_str(), 0755);
  write_bytes(d + "/model.safetensors.index.json", nlohmann::json{{"weight_map", {{"w", "sub"}}}}.dump());
  expect_error_mentioning([&] { read_weight_index(d, "model.safetensors.index.json"); }, "is not a regular file");
}

TEST(HostileReaders, ShapeProductsThatOverflowAreRefused) {
  expect_error_mentioning([] { Tensor<float> t(Shape{int64_t(1) << 40, int64_t(1) << 40}); }, "overflows int64");
  expect_error_mentioning([] { Tensor<double> t(Shape{int64_t(1) << 61}); }, "overflows 64 bits");
}

namespace {

nlohmann::json tiny_config() {
  return ModelConfig::preset("tiny", 64).to_json();
}

}  // namespace

TEST(HostileConfig, HugeVocabIsRefusedNotWrapped) {
  auto j = tiny_config();
  j["vocab_size"] = int64_t(1) << 62;
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "vocab_size 4611686018427387904 is larger");
}

TEST(HostileConfig, IntegersAreExact) {
  auto j = tiny_config();
  j["num_hidden_layers"] = int64_t(4294967297);
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "num_hidden_layers has value 4294967297, outside");
  j["num_hidden_layers"] = true;
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "num_hidden_layers has value true");
  j["num_hidden_layers"] = 1.5;
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "num_hidden_layers has value 1.5");
  j["num_hidden_layers"] = 2;
  j["tie_word_embeddings"] = 1;
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "it must be true or false");
  j["tie_word_embeddings"] = false;
  j["num_experts"] = {8.5};
  expect_error_mentioning([&] { ModelConfig::from_json(j, "c.json"); }, "num_experts has value 8.5");
  nlohmann::json mixtral = {{"model_type", "mixtral"}, {"vocab_size", 64}, {"hidden_size", 32},
                            {"intermediate_size", 48}, {"num_hidden_layers", 1.5}, {"num_attention_heads", 4},
                            {"num_local_experts", 4}, {"num_experts_per_tok", 2}};
  expect_error_mentioning([&] { ModelConfig::from_mixtral_json(mixtral, "m.json"); }, "num_hidden_layers has value 1.5");
}

TEST(HostileConfig, WeightsTheConfigDoesNotUseAreRefused) {
  // A 2-layer folder whose config says 1 layer: the second layer must not be dropped silently.
  const std::string d = scratch_dir("moepp-hostile-unused");
  const ModelConfig two = ModelConfig::preset("tiny", 64);
  auto params = ModelParams<float>::zeros(two);
  save_model_folder(d, two, params);
  auto j = two.to_json();
  j["num_hidden_layers"] = 1;
  write_bytes(d + "/config.json", j.dump());
  expect_error_mentioning([&] { load_model_folder(d); }, "model.layers.1.");
  expect_error_mentioning([&] { load_model_folder(d); }, "is not used by the config");
}

TEST(HostileConfig, ShapesAreCheckedBeforeAllocating) {
  // An 800-byte config promising a 64k x 16M embedding (4 TB) over a tiny file: refused on
  // the first shape, before any tensor is allocated (allocating would abort or take minutes).
  const std::string d = scratch_dir("moepp-hostile-alloc");
  const ModelConfig small = ModelConfig::preset("tiny", 64);
  auto params = ModelParams<float>::zeros(small);
  save_model_folder(d, small, params);
  auto j = small.to_json();
  j["vocab_size"] = int64_t(1) << 24;
  j["hidden_size"] = int64_t(1) << 16;
  j["num_attention_heads"] = 512;
  j["num_key_value_heads"] = 512;
  write_bytes(d + "/config.json", j.dump());
  expect_error_mentioning([&] { load_model_folder(d); }, "but the config implies [16777216, 65536]");
}

TEST(AtomicWrites, TemporariesOfDeadWritersAreRemovedOthersKept) {
  // A writer killed between creating "<path>.tmp-<pid>" and its rename leaves the file;
  // the next write of the same path removes it when that pid is provably dead.
  const std::string d = scratch_dir("moepp-hostile-tmp");
  pid_t dead = ::fork();
  if (dead == 0) _exit(0);
  ::waitpid(dead, nullptr, 0);  // reaped: this pid no longer exists
  const std::string stale = d + "/out.safetensors.tmp-" + std::to_string(dead);
  const std::string live = d + "/out.safetensors.tmp-" + std::to_string(::getppid());
  const std::string other = d + "/other.json.tmp-" + std::to_string(dead);
  for (const auto& p : {stale, live, other}) write_bytes(p, "partial");
  write_file_atomic(d + "/out.safetensors", "new");
  struct stat st;
  EXPECT_NE(::stat(stale.c_str(), &st), 0) << "a dead writer's temporary must go";
  EXPECT_EQ(::stat(live.c_str(), &st), 0) << "a live process's temporary stays";
  EXPECT_EQ(::stat(other.c_str(), &st), 0) << "another file's temporary is not this write's business";
  std::ifstream in(d + "/out.safetensors");
  std::string got;
  in >> got;
  EXPECT_EQ(got, "new");
}
