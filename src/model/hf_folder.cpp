#include "model/hf_folder.h"

#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "kernels/quant.h"
#include "model/model_folder.h"

namespace moepp {

using json = nlohmann::json;

namespace {

const std::string kQ8ScalesSuffix = ".q8_0_scales";

class SafetensorsSource : public WeightSource {
 public:
  SafetensorsSource(const std::string& dir, const std::string& single, const std::string& index) : dir_(dir) {
    if (!single.empty()) {
      auto f = std::make_shared<SafetensorsFile>(dir + "/" + single);
      for (const auto& [name, e] : f->entries()) where_[name] = f;
      what_ = dir + "/" + single;
    } else {
      std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
      for (const auto& [name, shard] : read_weight_index(dir, index)) {
        auto& f = files[shard];
        if (!f) f = std::make_shared<SafetensorsFile>(dir + "/" + shard);
        MOEPP_CHECK(f->has(name), dir, "/", shard, ": the index places ", name, " here, but it is not there");
        where_[name] = f;
      }
      what_ = dir + "/" + index;
    }
  }
  bool has(const std::string& n) override { return where_.count(n) != 0; }
  std::vector<std::string> names() override {
    std::vector<std::string> out;
    for (const auto& [name, f] : where_) out.push_back(name);
    return out;
  }
  std::vector<int64_t> shape(const std::string& n) override { return file(n).entry(n).shape; }
  Tensor<float> read_f32(const std::string& n) override {
    Tensor<float> t = file(n).read<float>(n);
    if (file(n).entry(n).dtype == DType::i8 && has(n + kQ8ScalesSuffix)) dequantize_q8_0(n, t);
    return t;
  }
  std::string describe() const override { return what_; }

 private:
  SafetensorsFile& file(const std::string& n) {
    const auto it = where_.find(n);
    MOEPP_CHECK(it != where_.end(), what_, ": no tensor named ", n);
    return *it->second;
  }
  // q8_0 as `moepp convert` writes it (docs/quantization.md): NAME is I8 [rows, cols], and
  // NAME.q8_0_scales F32 [rows, cols / 32] holds one scale per block of 32 columns.
  void dequantize_q8_0(const std::string& n, Tensor<float>& q) {
    const std::string sn = n + kQ8ScalesSuffix;
    const Shape qs = q.shape();
    MOEPP_CHECK(qs.rank() == 2 && qs[1] % kQ8Block == 0, file(n).path(), ": q8_0 tensor ", n, " has shape ", qs.str(),
                "; it needs 2 dimensions, the last a multiple of ", kQ8Block);
    const Tensor<float> scales = file(sn).read<float>(sn);
    MOEPP_CHECK((scales.shape() == Shape{qs[0], qs[1] / kQ8Block}), file(sn).path(), ": ", sn, " has shape ",
                scales.shape().str(), ", expected [", qs[0], ", ", qs[1] / kQ8Block, "] for ", n);
    for (int64_t i = 0; i < q.numel(); ++i) q[i] *= scales[i / kQ8Block];
  }
  std::string dir_, what_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> where_;
};

class TorchBinSource : public WeightSource {
 public:
  TorchBinSource(const std::string& dir, bool sharded) : what_(dir + (sharded ? "/pytorch_model.bin.index.json" : "/pytorch_model.bin")) {
    if (sharded) shards_ = std::make_unique<TorchBinShards>(dir);
    else single_ = std::make_unique<TorchBinFile>(dir + "/pytorch_model.bin");
  }
  bool has(const std::string& n) override { return single_ ? single_->has(n) : shards_->has(n); }
  std::vector<std::string> names() override {
    if (shards_) return shards_->names();
    std::vector<std::string> out;
    for (const auto& r : single_->tensors()) out.push_back(r.name);
    return out;
  }
  std::vector<int64_t> shape(const std::string& n) override {
    return single_ ? single_->ref(n).shape : shards_->shape(n);
  }
  Tensor<float> read_f32(const std::string& n) override { return single_ ? single_->read_f32(n) : shards_->read_f32(n); }
  std::string describe() const override { return what_; }

 private:
  std::string what_;
  std::unique_ptr<TorchBinFile> single_;
  std::unique_ptr<TorchBinShards> shards_;
};

bool is_mixtral_dir(const std::string& dir) {
  const json j = read_json_file(dir + "/config.json");
  return j.is_object() && j.contains("model_type") && j["model_type"] == "mixtral";
}

}  // namespace

std::unique_ptr<WeightSource> WeightSource::open(const std::string& dir) {
  if (file_exists(dir + "/model.safetensors")) return std::make_unique<SafetensorsSource>(dir, "model.safetensors", "");
  if (file_exists(dir + "/model.safetensors.index.json"))
    return std::make_unique<SafetensorsSource>(dir, "", "model.safetensors.index.json");
  if (file_exists(dir + "/pytorch_model.bin")) return std::make_unique<TorchBinSource>(dir, false);
  if (file_exists(dir + "/pytorch_model.bin.index.json")) return std::make_unique<TorchBinSource>(dir, true);
  fail(dir, ": no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
            "pytorch_model.bin.index.json)");
}

ModelConfig read_hf_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  MOEPP_CHECK(file_exists(path), dir, ": not a model folder (no config.json)");
  const json j = read_json_file(path);
  MOEPP_CHECK(j.is_object(), path, ": config is not a JSON object");
  if (j.contains("model_type") && j["model_type"] == "mixtral") return ModelConfig::from_mixtral_json(j, path);
  return ModelConfig::from_json(j, path);
}

namespace {

// The folder tensors parameter `name` (of shape `want`) is made of: itself in a MoE++
// folder; in a Mixtral folder the gate, w2, w1 and w3 stacked for up_proj, and nothing for
// the gate map (zeros: Mixtral has no gating residual).
struct SourcePart {
  std::string name;
  Shape shape;
};

std::vector<SourcePart> source_parts(bool mixtral, const std::string& name, const Shape& want, int64_t I, int64_t D,
                                     const std::string& what) {
  if (!mixtral || name.find(".mlp.moe.") == std::string::npos) return {{name, want}};
  // Mixtral: model.layers.L.block_sparse_moe.{gate, experts.i.w1/w3/w2}
  const std::string layer = name.substr(0, name.find(".mlp.moe."));
  const std::string rest = name.substr(layer.size() + 9);
  const std::string moe = layer + ".block_sparse_moe.";
  if (rest == "gate.wg.weight") return {{moe + "gate.weight", want}};
  if (rest == "gate.gate_map.weight") return {};
  if (rest.rfind("experts.experts.", 0) == 0) {
    const std::string tail = rest.substr(16);  // "i.up_proj.weight"
    const std::string e = moe + "experts." + tail.substr(0, tail.find('.')) + ".";
    if (tail.find("up_proj") != std::string::npos) return {{e + "w1.weight", Shape{I, D}}, {e + "w3.weight", Shape{I, D}}};
    return {{e + "w2.weight", want}};
  }
  fail(what, ": no Mixtral tensor maps to ", name);
}

// Tensors a folder may carry that no parameter uses: buffers older checkpoints saved.
bool ignorable_tensor(const std::string& name) {
  const std::string suffix = "rotary_emb.inv_freq";
  return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Checks, before anything is allocated, that every tensor cfg implies is present with its
// shape and that the files hold no tensor cfg leaves unused; throws naming the tensor.
void check_weights(const std::string& dir, bool mixtral, const ModelConfig& cfg, WeightSource& src) {
  std::set<std::string> used;
  const auto declared = ModelParams<float>::zeros(cfg, /*allocate=*/false);
  declared.for_each(cfg, [&](const std::string& name, const Tensor<float>& t) {
    for (const SourcePart& p : source_parts(mixtral, name, t.shape(), cfg.intermediate_size, cfg.hidden_size,
                                            src.describe())) {
      MOEPP_CHECK(src.has(p.name), src.describe(), ": tensor ", p.name, " is missing");
      const Shape got(src.shape(p.name));
      MOEPP_CHECK(got == p.shape, src.describe(), ": tensor ", p.name, " has shape ", got.str(),
                  " but the config implies ", p.shape.str());
      used.insert(p.name);
      used.insert(p.name + kQ8ScalesSuffix);
    }
  });
  // A tensor nothing reads means the config and the weights disagree (a layer count cut
  // short, a misspelt name): loading would silently drop it.
  for (const std::string& name : src.names())
    MOEPP_CHECK(used.count(name) || ignorable_tensor(name), src.describe(), ": tensor ", name,
                " is not used by the config (", dir, "/config.json: ", cfg.num_hidden_layers, " layers, ",
                cfg.num_experts, " experts); refusing to drop it silently");
}

}  // namespace

std::function<void(const std::string&, Tensor<float>&)> hf_tensor_reader(const std::string& dir, const ModelConfig& cfg,
                                                                           WeightSource& src) {
  const bool mixtral = is_mixtral_dir(dir);
  check_weights(dir, mixtral, cfg, src);
  const int64_t I = cfg.intermediate_size, D = cfg.hidden_size;
  return [&src, mixtral, I, D](const std::string& name, Tensor<float>& t) {
    const auto parts = source_parts(mixtral, name, t.shape(), I, D, src.describe());
    if (parts.empty()) {
      t.resize(t.shape());  // zeros
    } else if (parts.size() == 1) {
      t = src.read_f32(parts[0].name);
    } else {
      t.resize(t.shape());  // a streaming loader hands over shapes without storage
      int64_t at = 0;
      for (const SourcePart& p : parts) {
        const auto part = src.read_f32(p.name);
        std::copy(part.data(), part.data() + part.numel(), t.data() + at);
        at += part.numel();
      }
    }
  };
}

void read_hf_params(const std::string& dir, const ModelConfig& cfg, WeightSource& src, ModelParams<float>& params) {
  params.for_each(cfg, hf_tensor_reader(dir, cfg, src));
}

}  // namespace moepp
