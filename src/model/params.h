// ModelParams: every parameter of a decoder, owned, under its Hugging Face tensor name
// (SPEC §3.1). The same struct holds gradients and optimizer moments, so anything that
// walks parameters (the optimizer, checkpoints, gradient checks) uses for_each.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "model/config.h"
#include "moe/moe_params.h"

namespace moepp {

template <typename T>
struct LayerParams {
  Tensor<T> input_norm, post_norm;   // [D]
  Tensor<T> wq, wk, wv, wo;          // [D, D], [kvD, D], [kvD, D], [D, D]
  bool is_moe = false;
  MoeParams<T> moe;                  // MoE layers
  Tensor<T> gate, up, down;          // dense layers: [I, D], [I, D], [D, I]
};

template <typename T>
struct ModelParams {
  Tensor<T> embed;       // [V, D]
  std::vector<LayerParams<T>> layers;
  Tensor<T> final_norm;  // [D]
  Tensor<T> lm_head;     // [V, D]; empty when tied to embed

  // allocate=false declares the shapes only (Tensor::declare): what a streaming loader
  // walks with for_each, allocating one tensor at a time.
  static ModelParams zeros(const ModelConfig& cfg, bool allocate = true);
  const Tensor<T>& output_weights() const { return lm_head.numel() ? lm_head : embed; }

  // Every tensor with its SPEC name, in a fixed order.
  void for_each(const ModelConfig& cfg, const std::function<void(const std::string&, Tensor<T>&)>& fn);
  void for_each(const ModelConfig& cfg, const std::function<void(const std::string&, const Tensor<T>&)>& fn) const;

  // Normal(0, initializer_range) for matrices, ones for norms, constant vectors ~N(0, 1)
  // scaled like the matrices, gate maps zero (a new model starts without residual mixing).
  void init(const ModelConfig& cfg, Rng& rng);
  void zero();
  // Zeroes every tensor but the MoE layers' (model_backward with GradMode::overwrite: the
  // MoE layers write theirs).
  void zero_outside_moe_layers();
  int64_t numel(const ModelConfig& cfg) const;
};

// Parameters a token uses on average when each MoE layer sends it to `ffn_per_token` FFN
// experts (k for a vanilla MoE): the "activated" count.
int64_t activated_params(const ModelConfig& cfg, double ffn_per_token);
int64_t total_params(const ModelConfig& cfg);

}  // namespace moepp
