// Model folders: a tensor the config implies but the file lacks, or one whose shape
// contradicts the config, is an error naming the file and the tensor; f32 tensors moepp wrote
// aligned are used in place.
#include "model/model_folder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace moepp;

namespace {
std::string tmpdir() {
  return test::scratch_dir("moepp-mf");
}
void expect_error(const std::string& dir, const std::string& needle) {
  try {
    load_model_folder(dir);
    ADD_FAILURE() << "no error; expected " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(ModelFolderBadInput, MissingTensorIsNamed) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 16);
  const std::string dir = tmpdir();
  save_model_folder(dir, cfg, ModelParams<float>::zeros(cfg));
  // Rewrite the weights without one tensor.
  std::vector<SafetensorsWriteItem> items;
  const auto p = ModelParams<float>::zeros(cfg);
  p.for_each(cfg, [&](const std::string& n, const Tensor<float>& t) {
    if (n != "model.layers.1.mlp.moe.experts.experts.2.down_proj.weight")
      items.push_back({n, DType::f32, t.shape().dims, t.data()});
  });
  write_safetensors(dir + "/model.safetensors", items);
  expect_error(dir, "tensor model.layers.1.mlp.moe.experts.experts.2.down_proj.weight is missing");
}

TEST(ModelFolderBadInput, TensorShapeContradictingTheConfigIsNamed) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 16);
  const std::string dir = tmpdir();
  save_model_folder(dir, cfg, ModelParams<float>::zeros(cfg));
  // The same folder with a config whose intermediate size differs from the weights'.
  auto j = cfg.to_json();
  j["intermediate_size"] = 40;
  std::ofstream(dir + "/config.json") << j.dump();
  expect_error(dir, "has shape [96, 32] but the config implies [80, 32]");
}

TEST(ModelFolderBadInput, NoConfigAndTruncatedWeights) {
  const std::string empty = tmpdir();
  expect_error(empty, "not a model folder (no config.json)");
  const ModelConfig cfg = ModelConfig::preset("tiny", 16);
  const std::string dir = tmpdir();
  save_model_folder(dir, cfg, ModelParams<float>::zeros(cfg));
  std::string bytes;
  {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir + "/model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error(dir, "run outside the data section");
}

// In place: the f32 tensors of a folder moepp wrote are used from the copy-on-write mapping
// of its file (no copy into fresh memory), with the values the file holds; what a caller
// writes into them stays in the process. A file laid out otherwise loads by copying.

namespace {
ModelParams<float> random_params(const ModelConfig& cfg) {
  auto p = ModelParams<float>::zeros(cfg);
  Rng rng(11);
  p.init(cfg, rng);
  p.for_each(cfg, [&](const std::string&, Tensor<float>& t) {  // gate maps and norms too
    for (int64_t i = 0; i < t.numel(); ++i) t[i] += float(rng.normal()) * 0.01f;
  });
  return p;
}
// Every tensor of `got` against `want`, bit for bit; returns how many are borrowed.
int expect_same_values(const ModelConfig& cfg, const ModelParams<float>& want, const ModelParams<float>& got) {
  std::map<std::string, const Tensor<float>*> by_name;
  want.for_each(cfg, [&](const std::string& n, const Tensor<float>& t) { by_name[n] = &t; });
  int borrowed = 0;
  got.for_each(cfg, [&](const std::string& n, const Tensor<float>& t) {
    const Tensor<float>& w = *by_name.at(n);
    EXPECT_EQ(t.shape(), w.shape()) << n;
    EXPECT_EQ(std::memcmp(t.data(), w.data(), size_t(w.numel()) * 4), 0) << n;
    borrowed += t.borrowed();
  });
  return borrowed;
}
}  // namespace

TEST(ModelFolderInPlace, AlignedF32TensorsAreUsedInPlaceAndWritesStayInTheProcess) {
  ModelConfig cfg = ModelConfig::preset("tiny", 16);
  cfg.moe.num_constant += 1;  // 9 experts: the gate maps' 9 x 9 floats are no 64-byte multiple
  const auto original = random_params(cfg);
  const std::string dir = tmpdir();
  save_model_folder(dir, cfg, original);

  // The writer starts every tensor of a 64-byte multiple on a 64-byte boundary of the file.
  std::string bytes;
  {
    std::ifstream in(dir + "/model.safetensors", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | uint8_t(bytes[size_t(i)]);
  const SafetensorsFile file(dir + "/model.safetensors");
  int aligned = 0, tensors = 0;  // tensors that start on a boundary, of all
  for (const auto& [name, e] : file.entries()) {
    ++tensors;
    const bool starts_aligned = (8 + header + e.begin) % 64 == 0;
    EXPECT_TRUE(starts_aligned || (e.end - e.begin) % 64 != 0) << name << " is no odd size, yet unaligned";
    aligned += starts_aligned;
  }
  EXPECT_LT(aligned, tensors);  // (the gate maps after the first odd-sized one)

  int borrowed = 0;
  {
    LoadedModel m = load_model_folder(dir, {.in_place = true});  // the source it mapped is gone; the tensors keep it
    borrowed = expect_same_values(cfg, original, m.params);
    EXPECT_EQ(borrowed, aligned);  // exactly those that start aligned; the rest were copied
    Tensor<float>& wq = m.params.layers[0].wq;
    ASSERT_TRUE(wq.borrowed());
    for (int64_t i = 0; i < wq.numel(); ++i) wq[i] = 42.0f;  // training would write like this
    EXPECT_EQ(wq[wq.numel() - 1], 42.0f);
  }
  // The file did not change: a second load sees the saved values.
  const LoadedModel again = load_model_folder(dir, {.in_place = true});
  EXPECT_EQ(expect_same_values(cfg, original, again.params), borrowed);
  // By default every tensor is copied.
  EXPECT_EQ(expect_same_values(cfg, original, load_model_folder(dir).params), 0);
}

TEST(ModelFolderInPlace, UnalignedFilesLoadByCopying) {
  const ModelConfig cfg = ModelConfig::preset("tiny", 16);
  const auto original = random_params(cfg);
  const std::string dir = tmpdir();
  save_model_folder(dir, cfg, original);
  // The same tensors with the data starting 8 bytes past a 64-byte boundary (as a writer
  // that pads the header to 8 bytes may leave it): nothing can be used in place.
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  original.for_each(cfg, [&](const std::string& n, const Tensor<float>& t) {
    header[n] = {{"dtype", "F32"}, {"shape", t.shape().dims}, {"data_offsets", {data.size(), data.size() + t.numel() * 4}}};
    data.append(reinterpret_cast<const char*>(t.data()), size_t(t.numel()) * 4);
  });
  std::string h = header.dump();
  while ((8 + h.size()) % 64 != 8) h.push_back(' ');
  {
    std::ofstream out(dir + "/model.safetensors", std::ios::binary | std::ios::trunc);
    for (int i = 0; i < 8; ++i) out.put(char((uint64_t(h.size()) >> (8 * i)) & 0xff));
    out << h << data;
  }
  const LoadedModel m = load_model_folder(dir, {.in_place = true});
  EXPECT_EQ(expect_same_values(cfg, original, m.params), 0);
}
