// The decoder step of one layer (SPEC §1), the only place a layer's forward is written:
//   h = x + attention(rms1(x));  b = rms2(h);  x' = h + (MoE++ layer or dense MLP)(b)
// with the MoE layer's gating residual fed from the previous MoE layer's router logits.
// Training (model/transformer), inference over KV caches (model/decoder), `analyze`'s
// routing capture and `experiment`'s layer timing all run it. The backward (training
// only, dense weights) walks a LayerCache the forward filled.
#pragma once
#include <cstdint>

#include "core/grad_mode.h"
#include "core/tensor.h"
#include "model/attention_block.h"
#include "model/config.h"
#include "model/decoder_weights.h"
#include "model/dense_mlp.h"
#include "model/params.h"
#include "model/row_batch.h"
#include "moe/moe_layer.h"

namespace moepp {

template <typename T>
struct LayerCache {
  Tensor<T> x;          // layer input [n, D] (kept here by training; inference leaves it empty)
  AttentionCache<T> attn;
  Tensor<T> h;          // after the attention residual [n, D]
  Tensor<T> b, rstd2;   // rms2(h), its 1/rms
  MoeCache<T> moe;      // MoE layers
  DenseMlpCache<T> mlp; // dense layers
  int z_from = -1;      // training: the layer whose router logits fed this layer's gating residual
  double moe_seconds = 0;  // wall time of the last MoE layer forward (router to combine)
};

// Scratch of the training backward that every layer takes in turn (model/transformer keeps
// one in its ModelCache): db = dL/d rms2(h), the MoE layer's and the attention block's.
template <typename T>
struct LayerBackwardScratch {
  Tensor<T> db;
  MoeBackwardScratch<T> moe;
  AttentionBackwardScratch<T> attn;
};

// x: [rows, D]; z_prev: [rows, E] router logits of the previous MoE layer, or null (no
// gating residual). Writes x_out [rows, D] (it may be x). A MoE layer's own logits for the
// next one are c.moe.router.z.
template <typename T>
void decoder_layer_forward(const ModelConfig& cfg, const LayerWeights<T>& w, int layer, const RowBatch<T>& rows,
                           const T* x, const T* z_prev, LayerCache<T>& c, T* x_out);

// Training backward of the layer whose forward filled c (with x = c.x). dx: [n, D], the
// gradient w.r.t. x_out on entry and w.r.t. x on return (in place). dz: gradient w.r.t. this layer's
// router logits from the next MoE layer, or null; dz_prev: where the gradient w.r.t.
// z_prev goes (accumulated), or null. dbalance: dL/dL_b of this layer.
template <typename T>
void decoder_layer_backward(const ModelConfig& cfg, const LayerParams<T>& w, const RowBatch<T>& rows, const T* z_prev,
                            LayerCache<T>& c, const T* dz, double dbalance, T* dx, T* dz_prev,
                            LayerParams<T>& grad, GradMode mode, LayerBackwardScratch<T>& scratch);

}  // namespace moepp
