// The dense SwiGLU MLP of non-MoE layers: out = down(silu(gate(b)) * up(b)), with gate and
// up written side by side into one [BT, 2I] buffer so the SwiGLU kernel of the FFN
// experts serves here too.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "model/config.h"
#include "model/decoder_weights.h"
#include "model/params.h"

namespace moepp {

template <typename T>
struct DenseMlpCache {
  Tensor<T> gu;   // [BT, 2I]: gate(b) | up(b)
  Tensor<T> act;  // [BT, I]
};

template <typename T>
void dense_mlp_forward(const ModelConfig& cfg, const LayerWeights<T>& w, const T* b, int64_t n,
                       DenseMlpCache<T>& c, T* out);

// db += dL/db; grad.gate/up/down += their gradients.
template <typename T>
void dense_mlp_backward(const ModelConfig& cfg, const LayerParams<T>& w, const T* b, int64_t n,
                        const DenseMlpCache<T>& c, const T* dout, T* db, LayerParams<T>& grad);

}  // namespace moepp
