#include "io/hf_folder.h"

#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "kernels/quant.h"

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

ModelConfig mixtral_config(const json& j, const std::string& src) {
  auto num = [&](const char* k) {
    MOEPP_CHECK(j.contains(k) && j[k].is_number(), src, ": field ", k, " is missing or not a number");
    return j[k].get<double>();
  };
  ModelConfig c;
  c.model_type = "MoE++";  // moepp runs it as its vanilla MoE
  c.vocab_size = int64_t(num("vocab_size"));
  c.hidden_size = int64_t(num("hidden_size"));
  c.intermediate_size = int64_t(num("intermediate_size"));
  c.num_hidden_layers = int(num("num_hidden_layers"));
  c.num_attention_heads = int(num("num_attention_heads"));
  c.num_key_value_heads = j.contains("num_key_value_heads") ? int(num("num_key_value_heads")) : c.num_attention_heads;
  c.max_position_embeddings = j.contains("max_position_embeddings") ? int64_t(num("max_position_embeddings")) : 4096;
  c.rms_norm_eps = j.contains("rms_norm_eps") ? num("rms_norm_eps") : 1e-5;
  c.rope_theta = j.contains("rope_theta") ? num("rope_theta") : 1e6;
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  c.num_experts = int(num("num_local_experts"));
  c.top_k = int(num("num_experts_per_tok"));
  c.num_constant_experts = c.num_copy_experts = c.num_zero_experts = 0;
  c.moe_use_mixtral_gating = true;
  c.gate_weights = GateWeights::mixtral;
  c.moe_2layer_gate = false;
  c.moe_use_logits_norm = false;
  c.gating_residual = false;
  c.moe_expert_interval = 1;
  if (j.contains("hidden_act"))
    MOEPP_CHECK(j["hidden_act"] == "silu", src, ": hidden_act ", j["hidden_act"].dump(), " is not supported (silu only)");
  try {
    c.validate();
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  return c;
}

bool is_mixtral_dir(const std::string& dir) {
  const json j = read_json_file(dir + "/config.json");
  return j.value("model_type", std::string()) == "mixtral";
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
  if (j.value("model_type", std::string()) == "mixtral") return mixtral_config(j, path);
  return ModelConfig::from_json(j, path);
}

std::function<void(const std::string&, Tensor<float>&)> hf_tensor_reader(const std::string& dir, const ModelConfig& cfg,
                                                                           WeightSource& src) {
  const bool mixtral = is_mixtral_dir(dir);
  const int64_t I = cfg.intermediate_size, D = cfg.hidden_size;
  auto fetch = [&src](const std::string& name, const Shape& want) {
    MOEPP_CHECK(src.has(name), src.describe(), ": tensor ", name, " is missing");
    const Shape got(src.shape(name));
    MOEPP_CHECK(got == want, src.describe(), ": tensor ", name, " has shape ", got.str(), " but the config implies ",
                want.str());
    return src.read_f32(name);
  };
  return [&src, mixtral, I, D, fetch](const std::string& name, Tensor<float>& t) {
    if (!mixtral || name.find(".mlp.moe.") == std::string::npos) {
      t = fetch(name, t.shape());
      return;
    }
    // Mixtral: model.layers.L.block_sparse_moe.{gate, experts.i.w1/w3/w2}
    const std::string layer = name.substr(0, name.find(".mlp.moe."));
    const std::string rest = name.substr(layer.size() + 9);
    const std::string moe = layer + ".block_sparse_moe.";
    if (rest == "gate.wg.weight") {
      t = fetch(moe + "gate.weight", t.shape());
    } else if (rest == "gate.gate_map.weight") {
      t.resize(t.shape());  // zeros: Mixtral has no gating residual
    } else if (rest.rfind("experts.experts.", 0) == 0) {
      const std::string tail = rest.substr(16);  // "i.up_proj.weight"
      const std::string i = tail.substr(0, tail.find('.'));
      const std::string e = moe + "experts." + i + ".";
      if (tail.find("up_proj") != std::string::npos) {
        const auto w1 = fetch(e + "w1.weight", Shape{I, D});
        const auto w3 = fetch(e + "w3.weight", Shape{I, D});
        t.resize(t.shape());  // a streaming loader hands over shapes without storage
        std::copy(w1.data(), w1.data() + w1.numel(), t.data());
        std::copy(w3.data(), w3.data() + w3.numel(), t.data() + w1.numel());
      } else {
        t = fetch(e + "w2.weight", t.shape());
      }
    } else {
      fail(src.describe(), ": no Mixtral tensor maps to ", name);
    }
  };
}

void read_hf_params(const std::string& dir, const ModelConfig& cfg, WeightSource& src, ModelParams<float>& params) {
  params.for_each(cfg, hf_tensor_reader(dir, cfg, src));
}

}  // namespace moepp
