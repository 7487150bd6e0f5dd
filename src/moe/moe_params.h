// MoeParams: the parameters of one MoE++ layer, owned, named as in SPEC §3.1 relative to
// the layer's `mlp.moe.` prefix. The same struct holds a layer's gradients, so a backward
// pass writes into a MoeParams of identical shapes.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "moe/moe_config.h"

namespace moepp {

template <typename T>
struct MoeParams {
  Tensor<T> wg;        // [E, D]       gate.wg.weight (linear router)
  Tensor<T> w1, w2;    // [8E, D], [E, 8E]  gate.wg.0 / gate.wg.2 (2-layer router)
  Tensor<T> gate_map;  // [E, E]       gate.gate_map.weight
  std::vector<Tensor<T>> up;           // per FFN expert [2I, D]
  std::vector<Tensor<T>> down;         // per FFN expert [D, I]
  std::vector<Tensor<T>> constant;     // per constant expert [D]
  std::vector<Tensor<T>> constant_wg;  // per constant expert [2, D]

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
  // The same for everything but the FFN experts (a packed model keeps those elsewhere).
  void check_router_shapes(const MoeConfig& cfg) const;
};

}  // namespace moepp
