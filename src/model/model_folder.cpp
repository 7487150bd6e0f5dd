#include "model/model_folder.h"

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/hf_folder.h"

namespace moepp {

FileStamp write_params(const std::string& path, const ModelConfig& cfg, const ModelParams<float>& params,
                  const std::string& prefix) {
  std::vector<SafetensorsWriteItem> items;
  params.for_each(cfg, [&](const std::string& name, const Tensor<float>& t) {
    items.push_back({prefix + name, DType::f32, t.shape().dims, t.data()});
  });
  return write_safetensors(path, items, {{"format", "pt"}, {"writer", "moepp"}});
}

void read_params(const std::string& path, const ModelConfig& cfg, ModelParams<float>& params,
                 const std::string& prefix) {
  const SafetensorsFile f(path);
  params.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
    const std::string key = prefix + name;
    MOEPP_CHECK(f.has(key), path, ": tensor ", key, " is missing");
    const auto& e = f.entry(key);
    MOEPP_CHECK(Shape(e.shape) == t.shape(), path, ": tensor ", key, " has shape ", Shape(e.shape).str(),
                " but the config implies ", t.shape().str());
    t = f.read<float>(key);
  });
}

void save_model_folder(const std::string& dir, const ModelConfig& cfg, const ModelParams<float>& params,
                       const std::string& tokenizer_model) {
  make_dirs(dir);
  write_params(dir + "/model.safetensors", cfg, params);
  if (!tokenizer_model.empty() && tokenizer_model != dir + "/tokenizer.model")
    copy_file_atomic(tokenizer_model, dir + "/tokenizer.model");
  write_file_atomic(dir + "/config.json", cfg.to_json().dump(2) + "\n");
}

ModelConfig load_model_config(const std::string& dir) { return read_hf_config(dir); }

LoadedModel load_model_folder(const std::string& dir, const LoadOptions& options) {
  LoadedModel m;
  m.dir = dir;
  m.config = read_hf_config(dir);
  // Shapes only: each tensor is allocated as it is read, after every shape was checked
  // against the files (a hostile config must not allocate gigabytes first).
  m.params = ModelParams<float>::zeros(m.config, /*allocate=*/false);
  // In place: mapped copy-on-write and kept by the tensors it lends (f32 tensors stored
  // aligned, as moepp writes them, are used from the page cache instead of copied into fresh
  // memory; what a caller writes into them stays in this process).
  const std::shared_ptr<WeightSource> src =
      WeightSource::open(dir, options.in_place ? MapMode::copy_on_write : MapMode::read_only);
  read_hf_params(dir, m.config, *src, m.params, options.in_place ? src : nullptr);
  return m;
}

std::unique_ptr<PackedModel> load_packed_model_folder(const std::string& dir, WeightType type) {
  const ModelConfig cfg = read_hf_config(dir);
  // Shared: matrices stored in the kernels' layout view the mapped files, which then live
  // as long as the model (hf_packed_reader).
  const std::shared_ptr<WeightSource> src = WeightSource::open(dir);
  return PackedModel::build(cfg, type, hf_tensor_reader(dir, cfg, *src), hf_packed_reader(dir, cfg, *src, type, src));
}

}  // namespace moepp
