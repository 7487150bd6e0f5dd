// MoeParams: the parameters of one MoE++ layer, owned, named as in SPEC §3.1 relative to
// the layer's `mlp.moe.` prefix. The same struct holds a layer's gradients, so a backward
// pass writes into a MoeParams of identical shapes.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/quant.h"
#include "moe/moe_config.h"

namespace moepp {

// FFN experts kept compact for inference (bf16 / q8_0 / f32, see kernels/quant.h); owned
// by a PackedModel. When a MoeParams<float> points at one, its up/down vectors are empty
// and the experts run through packed_linear.
struct PackedExperts {
  std::vector<PackedMatrix> up, down;  // per FFN expert [2I, D], [D, I]
};

template <typename T>
struct MoeParams {
  Tensor<T> wg;        // [E, D]       gate.wg.weight (linear router)
  Tensor<T> w1, w2;    // [8E, D], [E, 8E]  gate.wg.0 / gate.wg.2 (2-layer router)
  Tensor<T> gate_map;  // [E, E]       gate.gate_map.weight
  std::vector<Tensor<T>> up;           // per FFN expert [2I, D]
  std::vector<Tensor<T>> down;         // per FFN expert [D, I]
  std::vector<Tensor<T>> constant;     // per constant expert [D]
  std::vector<Tensor<T>> constant_wg;  // per constant expert [2, D]
  const PackedExperts* packed = nullptr;  // inference only: the FFN experts, packed

  // Zero-filled tensors of the shapes cfg implies.
  // allocate=false declares the shapes only (Tensor::declare), for streaming loaders.
  static MoeParams zeros(const MoeConfig& cfg, bool allocate = true);

  // Normal(0, std) for every tensor (gate_map and constant vectors included).
  void init_normal(Rng& rng, double std);

  void zero();
  // Zeroes every tensor but the FFN experts' (moe_backward with GradMode::overwrite: their
  // GEMMs write those).
  void zero_outside_ffn_experts();

  // Visits every tensor with its SPEC name, e.g. "experts.3.up_proj.weight".
  void for_each(const MoeConfig& cfg, const std::function<void(const std::string&, Tensor<T>&)>& fn);

  // Throws moepp::Error naming the first tensor whose shape does not match cfg.
  void check_shapes(const MoeConfig& cfg) const;
};

}  // namespace moepp
