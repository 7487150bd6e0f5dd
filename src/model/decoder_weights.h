// DecoderWeights: the one way the decoder step reads a model's weights, whoever holds them.
// Taken from a ModelParams (training, the f64 verification path: every matrix dense) or
// from a PackedModel (inference: the embedding, projections, experts and LM head packed as
// f32 panels, bf16 or q8_0; norms, routers and constant experts dense f32). A view owns
// nothing: the ModelParams or PackedModel must outlive it and stay unchanged in shape.
#pragma once
#include <type_traits>
#include <vector>

#include "kernels/linear.h"
#include "model/config.h"
#include "model/packed_model.h"
#include "model/params.h"
#include "moe/moe_weights.h"

namespace moepp {

template <typename T>
struct LayerWeights {
  const T* input_norm = nullptr;  // [D]
  const T* post_norm = nullptr;   // [D]
  MatrixView<T> wq, wk, wv, wo;
  bool is_moe = false;
  MoeWeights<T> moe;              // MoE layers
  MatrixView<T> gate, up, down;   // dense layers
};

template <typename T>
struct DecoderWeights {
  MatrixView<T> embed;            // [V, D]
  std::vector<LayerWeights<T>> layers;
  const T* final_norm = nullptr;  // [D]
  MatrixView<T> output;           // the LM head [V, D] (the embedding when tied)

  static DecoderWeights of(const ModelParams<T>& params);
  static DecoderWeights of(const PackedModel& model)
    requires std::is_same_v<T, float>;
};

}  // namespace moepp
