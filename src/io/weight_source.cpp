#include "io/weight_source.h"

#include <map>
#include <memory>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/quant_layout.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"

namespace moepp {

namespace {

class SafetensorsSource : public WeightSource {
 public:
  SafetensorsSource(const std::string& dir, const std::string& single, const std::string& index, MapMode mode)
      : dir_(dir) {
    if (!single.empty()) {
      auto f = std::make_shared<SafetensorsFile>(dir + "/" + single, mode);
      for (const auto& [name, e] : f->entries()) where_[name] = f;
      what_ = dir + "/" + single;
    } else {
      std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
      for (const auto& [name, shard] : read_weight_index(dir, index)) {
        auto& f = files[shard];
        if (!f) f = std::make_shared<SafetensorsFile>(dir + "/" + shard, mode);
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
  // A q4 matrix's bytes hold two values each: its shape is the matrix's.
  std::vector<int64_t> shape(const std::string& n) override {
    std::vector<int64_t> s = file(n).entry(n).shape;
    if (is_q4(n) && s.size() == 2) s[1] *= 2;
    return s;
  }
  Tensor<float> read_f32(const std::string& n) override {
    Tensor<float> t = file(n).read<float>(n);
    release(n);
    if (file(n).entry(n).dtype == DType::i8 && has(n + kQ8ScalesSuffix)) dequantize_q8_0(n, t);
    if (is_q4(n)) {
      const std::string sn = n + kQ4ScalesSuffix;
      return expand_q4(file(n).path(), n, t, file(sn).read<float>(sn));
    }
    return t;
  }
  void release(const std::string& n) override { file(n).release(n); }
  std::string describe() const override { return what_; }
  float* in_place_f32(const std::string& n) override { return file(n).in_place_f32(n); }
  std::optional<Raw> raw(const std::string& n) override {
    const SafetensorsFile& f = file(n);
    const SafetensorsEntry& e = f.entry(n);
    return Raw{e.dtype, e.shape, f.raw(n), size_t(e.end - e.begin), f.path()};
  }

 private:
  SafetensorsFile& file(const std::string& n) {
    const auto it = where_.find(n);
    MOEPP_CHECK(it != where_.end(), what_, ": no tensor named ", n);
    return *it->second;
  }
  bool is_q4(const std::string& n) { return file(n).entry(n).dtype == DType::u8 && has(n + kQ4ScalesSuffix); }
  void dequantize_q8_0(const std::string& n, Tensor<float>& q) {
    const std::string sn = n + kQ8ScalesSuffix;
    const Tensor<float> scales = file(sn).read<float>(sn);
    apply_q8_0_scales(file(n).path(), n, scales, q);
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

}  // namespace

std::unique_ptr<WeightSource> WeightSource::open(const std::string& dir, MapMode mode) {
  if (file_exists(dir + "/model.safetensors"))
    return std::make_unique<SafetensorsSource>(dir, "model.safetensors", "", mode);
  if (file_exists(dir + "/model.safetensors.index.json"))
    return std::make_unique<SafetensorsSource>(dir, "", "model.safetensors.index.json", mode);
  if (file_exists(dir + "/pytorch_model.bin")) return std::make_unique<TorchBinSource>(dir, false);
  if (file_exists(dir + "/pytorch_model.bin.index.json")) return std::make_unique<TorchBinSource>(dir, true);
  fail(dir, ": no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
            "pytorch_model.bin.index.json)");
}

}  // namespace moepp
