#include "model/hf_folder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/parallel.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/quant_layout.h"
#include "io/weight_source.h"
#include "model/model_folder.h"

namespace moepp {

using json = nlohmann::json;

namespace {

bool is_mixtral_dir(const std::string& dir) {
  const json j = read_json_file(dir + "/config.json");
  return j.is_object() && j.contains("model_type") && j["model_type"] == "mixtral";
}

}  // namespace

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
      used.insert(p.name + kQ4ScalesSuffix);
    }
  });
  // A tensor nothing reads means the config and the weights disagree (a layer count cut
  // short, a misspelt name): loading would silently drop it.
  for (const std::string& name : src.names())
    MOEPP_CHECK(used.count(name) || ignorable_tensor(name), src.describe(), ": tensor ", name,
                " is not used by the config (", dir, "/config.json: ", cfg.num_hidden_layers, " layers, ",
                cfg.num_experts(), " experts); refusing to drop it silently");
}

// Touches one byte of every page of a borrowed tensor on all threads, so that its pages
// are mapped while loading (as a copy would have) and not one by one in the first tokens.
void prefault(const void* data, size_t bytes) {
  const auto* p = static_cast<const volatile uint8_t*>(data);
  constexpr size_t kPage = 4096;
  parallel_for(int64_t((bytes + kPage - 1) / kPage), [&](int64_t i) { (void)p[size_t(i) * kPage]; }, 256);
}

}  // namespace

std::function<void(const std::string&, Tensor<float>&)> hf_tensor_reader(const std::string& dir, const ModelConfig& cfg,
                                                                           WeightSource& src,
                                                                           std::shared_ptr<const void> keeper) {
  const bool mixtral = is_mixtral_dir(dir);
  check_weights(dir, mixtral, cfg, src);
  const int64_t I = cfg.intermediate_size, D = cfg.hidden_size;
  return [&src, mixtral, I, D, keeper](const std::string& name, Tensor<float>& t) {
    const auto parts = source_parts(mixtral, name, t.shape(), I, D, src.describe());
    float* in_place = keeper && parts.size() == 1 ? src.in_place_f32(parts[0].name) : nullptr;
    if (parts.empty()) {
      t.resize(t.shape());  // zeros
    } else if (in_place) {  // (check_weights has compared the stored shape with t's)
      t.borrow(t.shape(), in_place, keeper);
      prefault(in_place, size_t(t.numel()) * sizeof(float));
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

namespace {

// bf16 matrices stored as bf16 (a bf16 safetensors folder, Mixtral's included) are copied
// as they are: widening to f32 and rounding back is the identity.
PackedModel::PackedFill bf16_reader(bool mixtral, int64_t I, int64_t D, WeightSource& src,
                                    std::shared_ptr<const void> keeper) {
  return [&src, mixtral, I, D, keeper](const std::string& name, const Shape& want, PackedMatrix& out) {
    const auto parts = source_parts(mixtral, name, want, I, D, src.describe());
    if (parts.empty() || want.rank() != 2) return false;
    std::vector<WeightSource::Raw> raws;
    size_t bytes = 0;
    for (const SourcePart& p : parts) {
      auto raw = src.raw(p.name);
      if (!raw || raw->dtype != DType::bf16) return false;
      bytes += raw->bytes;
      raws.push_back(std::move(*raw));
    }
    const int64_t rows = want[0], cols = want[1];
    // (check_weights has compared every part's shape with the config.)
    MOEPP_CHECK(bytes == size_t(rows * cols) * 2, src.describe(), ": ", name, " is stored in ", bytes,
                " bytes of bf16, expected ", want.str());
    out.type = WeightType::bf16;
    out.rows = rows;
    out.cols = cols;
    if (keeper && raws.size() == 1 && reinterpret_cast<uintptr_t>(raws[0].data) % alignof(uint16_t) == 0) {
      out.bf16.borrow(reinterpret_cast<const uint16_t*>(raws[0].data), size_t(rows * cols), keeper);
    } else {  // joined parts (a Mixtral expert's w1 and w3), or a source that must not be kept
      out.bf16.resize(size_t(rows * cols));
      uint16_t* to = out.bf16.mutable_data();
      size_t at = 0;
      for (size_t i = 0; i < raws.size(); ++i) {
        parallel_copy(to + at, raws[i].data, raws[i].bytes);
        at += raws[i].bytes / 2;
        src.release(parts[i].name);
      }
    }
    // What pack() refuses from f32, refused here: an exponent of all ones is inf or NaN.
    // On all threads by row (a 7B model holds billions), the first such weight named.
    const uint16_t* v = out.bf16.data();
    int64_t bad = rows * cols;
#pragma omp parallel for reduction(min : bad) schedule(static) if (rows * cols > (1 << 20))
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        if ((v[r * cols + c] & 0x7F80) == 0x7F80) {
          bad = std::min(bad, r * cols + c);
          break;
        }
    MOEPP_CHECK(bad == rows * cols, src.describe(), ": ", name, " holds a non-finite weight at row ", bad / cols,
                ", column ", bad % cols);
    return true;
  };
}

}  // namespace

PackedModel::PackedFill hf_packed_reader(const std::string& dir, const ModelConfig& cfg, WeightSource& src,
                                         WeightType type, std::shared_ptr<const void> keeper) {
  if (type == WeightType::bf16)
    return bf16_reader(is_mixtral_dir(dir), cfg.intermediate_size, cfg.hidden_size, src, keeper);
  if (type != WeightType::q8_0 && type != WeightType::q4) return {};
  if (is_mixtral_dir(dir)) return {};  // (convert writes moepp's names: its folders are never Mixtral's)
  const bool q8 = type == WeightType::q8_0;
  const std::string suffix = q8 ? kQ8ScalesSuffix : kQ4ScalesSuffix;
  return [&src, type, q8, suffix, keeper](const std::string& name, const Shape& want, PackedMatrix& out) {
    if (want.rank() != 2 || !weight_type_fits(type, want[1]) || !src.has(name + suffix)) return false;
    const auto raw = src.raw(name);
    if (!raw || raw->dtype != (q8 ? DType::i8 : DType::u8)) return false;
    const int64_t rows = want[0], cols = want[1], stored_cols = q8 ? cols : cols / 2;
    // (check_weights has compared the matrix's shape with the config; the bytes follow from it.)
    MOEPP_CHECK(raw->shape == (std::vector<int64_t>{rows, stored_cols}) && raw->bytes == size_t(rows * stored_cols),
                raw->file, ": ", name, " holds ", raw->bytes, " bytes, expected [", rows, ", ", stored_cols, "]");
    // As f16, as the kernels keep them: the bits as stored in F16 files (convert's), rounded
    // to nearest from the F32 scales of folders converted before 2026-12-05. (Converting each
    // scale to f32 and back, one at a time, took ~70% of a q8_0 folder's load.)
    const int64_t blocks = cols / kQ8FileBlock;
    const auto wrong_shape = [&](const std::vector<int64_t>& shape) {
      fail(raw->file, ": ", name, suffix, " has shape ", Shape(shape).str(), ", expected [", rows, ", ", blocks,
           "] for ", name);
    };
    out.scales.resize(size_t(rows * blocks));
    Tensor<float> f32_scales;
    if (const auto stored = src.raw(name + suffix); stored && stored->dtype == DType::f16) {
      if (stored->shape != std::vector<int64_t>{rows, blocks}) wrong_shape(stored->shape);
      MOEPP_CHECK(stored->bytes == out.scales.size() * sizeof(uint16_t), stored->file, ": ", name, suffix, " holds ",
                  stored->bytes, " bytes for ", rows * blocks, " f16 scales");
      std::memcpy(out.scales.data(), stored->data, stored->bytes);
      src.release(name + suffix);  // (the copy is what stays resident)
    } else {
      f32_scales = src.read_f32(name + suffix);
      if (f32_scales.shape() != Shape{rows, blocks}) wrong_shape(f32_scales.shape().dims);
      f32_to_f16(f32_scales.data(), f32_scales.numel(), out.scales.data());
    }
    for (int64_t i = 0; i < rows * blocks; ++i)
      if ((out.scales[size_t(i)] & 0x7c00) == 0x7c00)  // inf or NaN in f16
        fail(raw->file, ": ", name, suffix, " holds a scale ",
             f32_scales.numel() ? f32_scales[i] : f16_to_f32(out.scales[size_t(i)]), " at row ", i / blocks, ", block ",
             i % blocks, ", not finite or beyond f16's range");
    out.type = type;
    out.rows = rows;
    out.cols = cols;
    if (keeper) {  // used in place: the file's bytes are the kernels' layout
      if (q8)
        out.q.borrow(reinterpret_cast<const int8_t*>(raw->data), raw->bytes, keeper);
      else
        out.nibbles.borrow(raw->data, raw->bytes, keeper);
      prefault(raw->data, raw->bytes);
      return true;
    }
    if (q8) {
      out.q.resize(raw->bytes);
      parallel_copy(out.q.mutable_data(), raw->data, raw->bytes);
    } else {
      out.nibbles.resize(raw->bytes);
      parallel_copy(out.nibbles.mutable_data(), raw->data, raw->bytes);
    }
    src.release(name);
    return true;
  };
}

void read_hf_params(const std::string& dir, const ModelConfig& cfg, WeightSource& src, ModelParams<float>& params,
                    std::shared_ptr<const void> keeper) {
  params.for_each(cfg, hf_tensor_reader(dir, cfg, src, std::move(keeper)));
}

}  // namespace moepp
