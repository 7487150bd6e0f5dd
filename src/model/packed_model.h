// PackedModel: a loaded decoder with its large matrices kept compact for inference (f32,
// bf16, q8_0 or q4; kernels/quant.h). Packed: the embedding, the attention projections, the
// FFN experts, dense MLPs and the LM head. Kept f32: norms, routers, gate maps and the
// constant experts - small, and routing decisions should not move with quantisation.
// A q8_0 or q4 matrix whose row length is not a multiple of 32 stays f32 (docs/quantization.md).
// Packing releases each f32 matrix as soon as it is packed.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/quant.h"
#include "model/config.h"
#include "model/params.h"

namespace moepp {

// The tensors a PackedModel packs: the embedding, the LM head and every *_proj.weight.
bool is_packed_tensor(const std::string& name);

struct PackedLayer {
  PackedMatrix wq, wk, wv, wo;
  bool is_moe = false;
  PackedMatrix gate, up, down;                       // dense layers
  std::vector<PackedMatrix> expert_up, expert_down;  // MoE layers: per FFN expert [2I, D], [D, I]
};

struct PackedModel {
  ModelConfig config;
  WeightType type = WeightType::f32;
  ModelParams<float> rest;  // what stays f32; the packed matrices are empty here (DecoderWeights::of joins the two)
  PackedMatrix embed, lm_head;
  bool tied = false;  // the LM head is the embedding
  std::vector<PackedLayer> layers;

  // Fills the model one tensor at a time: fill(name, t) receives t with the shape cfg
  // implies declared but no storage (Tensor::declare) and must give it that shape with
  // its values, by assignment or resize; matrices to pack are packed and freed at once,
  // so loading never holds more than one f32 matrix beyond the packed model.
  using Fill = std::function<void(const std::string& name, Tensor<float>& t)>;
  // Optional: gives a matrix to pack already packed as `type` (a quantized folder's blocks
  // taken as stored); returns false to have it read through fill and packed.
  using PackedFill = std::function<bool(const std::string& name, const Shape& shape, PackedMatrix& out)>;
  static std::unique_ptr<PackedModel> build(const ModelConfig& cfg, WeightType type, const Fill& fill,
                                            const PackedFill& packed_fill = {});
  // Takes the parameters over; `type` f32 keeps every value as it is.
  static std::unique_ptr<PackedModel> pack(const ModelConfig& cfg, ModelParams<float>&& params, WeightType type);
  const PackedMatrix& output_weights() const { return tied ? embed : lm_head; }
  size_t packed_bytes() const;  // bytes of all packed matrices
  // Every packed matrix with its SPEC name.
  void for_each_packed(const std::function<void(const std::string&, const PackedMatrix&)>& fn) const;
};

}  // namespace moepp
