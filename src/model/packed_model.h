// PackedModel: a loaded decoder with its large matrices kept compact for inference (f32,
// bf16 or q8_0; kernels/quant.h). Packed: the embedding, the attention projections, the
// FFN experts, dense MLPs and the LM head. Kept f32: norms, routers, gate maps and the
// constant experts - small, and routing decisions should not move with quantisation.
// A q8_0 matrix whose row length is not a multiple of 32 stays f32 (docs/quantization.md).
// Packing releases each f32 matrix as soon as it is packed.
#pragma once
#include <memory>
#include <vector>

#include "kernels/quant.h"
#include "model/config.h"
#include "model/params.h"

namespace moepp {

struct PackedLayer {
  PackedMatrix wq, wk, wv, wo;
  PackedMatrix gate, up, down;            // dense layers
  std::unique_ptr<PackedExperts> experts;  // MoE layers; rest.layers[l].moe.packed points here
};

struct PackedModel {
  ModelConfig config;
  WeightType type = WeightType::f32;
  ModelParams<float> rest;  // what stays f32; the packed matrices are empty here
  PackedMatrix embed, lm_head;
  bool tied = false;  // the LM head is the embedding
  std::vector<PackedLayer> layers;

  // Takes the parameters over; `type` f32 keeps every value as it is.
  static std::unique_ptr<PackedModel> pack(const ModelConfig& cfg, ModelParams<float>&& params, WeightType type);
  const PackedMatrix& output_weights() const { return tied ? embed : lm_head; }
  size_t packed_bytes() const;  // bytes of all packed matrices
};

}  // namespace moepp
