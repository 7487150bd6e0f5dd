// The attention sublayer of a decoder layer: h = x + o_proj(attention(rope(q), rope(k), v))
// with q, k, v projected from rms1(x). Forward keeps its activations in AttentionCache;
// in inference the rows' keys and values also go to their sequences' KV caches, and each
// row attends to its sequence's cached positions up to its own.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/decoder_weights.h"
#include "model/params.h"
#include "model/row_batch.h"

namespace moepp {

template <typename T>
struct AttentionCache {
  Tensor<T> a, rstd;   // rms1(x) [BT, D], 1/rms [BT]
  Tensor<T> q, k, v;   // [BT, D], [BT, kvD], [BT, kvD] (q, k after RoPE)
  Tensor<T> softmax_stats;  // [B, H, 2, S] (training only; kernels/attention.h)
  Tensor<T> ctx;       // attention output before o_proj [BT, D]
  // Inference: each row's key/value history and its length, reused from layer to layer.
  std::vector<const T*> keys, values;
  std::vector<const uint16_t*> keys_bf16, values_bf16;  // caches holding bf16 (KvDtype::bf16)
  std::vector<int64_t> context, head_strides;
};

// The backward's gradients of the block's intermediates (dL/dctx, dq, dk, dv, dL/da):
// scratch that one training step's layers take in turn, kept between steps so that no
// step allocates or zeroes them anew.
template <typename T>
struct AttentionBackwardScratch {
  Tensor<T> dctx, dq, dk, dv, da;
};

// x: [rows, D]. Writes h [rows, D].
template <typename T>
void attention_block_forward(const ModelConfig& cfg, const LayerWeights<T>& w, int layer, const RowBatch<T>& rows,
                             const T* x, AttentionCache<T>& c, T* h);

// d: [B * S, D], the gradient w.r.t. h on entry and w.r.t. x on return (the residual path
// included), in place; grad += weights' grads.
template <typename T>
void attention_block_backward(const ModelConfig& cfg, const LayerParams<T>& w, const T* x,
                              int64_t B, int64_t S, const AttentionCache<T>& c, T* d, LayerParams<T>& grad,
                              AttentionBackwardScratch<T>& scratch);

// Positions 0..S-1 repeated for B sequences.
std::vector<int32_t> sequence_positions(int64_t B, int64_t S);

}  // namespace moepp
