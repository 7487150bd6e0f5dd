// Model folders: a tensor the config implies but the file lacks, or one whose shape
// contradicts the config, is an error naming the file and the tensor.
#include "model/model_folder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
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
