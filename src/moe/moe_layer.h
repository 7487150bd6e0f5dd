// The MoE++ layer (SPEC §2): router -> top-k -> dispatch -> FFN grouped GEMMs plus one
// fused pass for the copy and constant experts -> combine, and the balance loss. The
// backward is the mirror image. A vanilla MoE is the same code with no zero-computation
// experts. MoeCache holds the activations of the last forward; its scratch buffers grow to
// the largest batch seen and are reused.
#pragma once
#include <cstdint>
#include <vector>

#include "core/collectives.h"
#include "core/grad_mode.h"
#include "core/tensor.h"
#include "moe/dispatch.h"
#include "moe/expert_parallel.h"
#include "moe/experts/ffn.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_weights.h"
#include "moe/router.h"
#include "moe/routing_stats.h"

namespace moepp {

template <typename T>
struct MoeCache {
  int64_t tokens = 0;
  Tensor<T> x_in;            // [T, D] k*x, what the experts receive when inputs are scaled (else they read x)
  RouterCache<T> router;
  DispatchPlan plan;
  FfnCache<T> ffn;
  Tensor<T> constant_a;      // [T*k, 2] softmax weights of constant slots
  std::vector<double> f;     // [E] balance-loss token fractions
  double balance_loss = 0;   // L_b of this layer (before beta)
  int64_t balance_tokens = 0;  // the tokens f and L_b are over (all ranks' in a multi-process batch)
  // A multi-process run's ranks (null: one process). Set, the balance loss covers the whole
  // batch across ranks, and with an expert-parallel group the FFN experts run on their owners.
  Collectives* comm = nullptr;
  // Set by training (SPEC §2.4; 0: dropless, as inference always is): slots over their
  // expert's capacity in the batch (all ranks' with comm) are dropped and add nothing
  // (moe/dispatch.h).
  double capacity_factor = 0.0;
  ExpertParallelCache<T> ep;
  RoutingStats stats;
};

// The backward's intermediates: the slots' gate gradients dg [T, k], the FFN rows' output,
// hidden, pre-activation and input gradients (d_o, d_h, d_u, d_xg: [R, ...] in plan
// order; with expert parallelism d_h and d_u hold the owner's rows instead, and owner_d_o
// and owner_d_xg the owner's output and input gradients in owner order), the tokens'
// input gradient dx_in [T, D] and the balance loss's dL/dp [T, E].
// Nothing reads them once moe_backward returns, so the layers of a step take one in turn
// (model/decoder_layer's LayerBackwardScratch), kept between steps: ~90 MB a layer at the
// paper-0.6b preset's 2048 positions, held once instead of once per layer.
template <typename T>
struct MoeBackwardScratch {
  Tensor<T> d_o, d_h, d_u, d_xg, dx_in, dg, dp;
  Tensor<T> owner_d_o, owner_d_xg;  // expert parallelism only
};

// x: [T, D]; z_prev: [T, E] from the previous MoE layer or null. Writes y [T, D]; the
// layer's z for the next layer is cache.router.z.
template <typename T>
void moe_forward(const MoeConfig& cfg, const MoeWeights<T>& w, const T* x, int64_t tokens,
                 const T* z_prev, MoeCache<T>& cache, T* y);
// The layer as trained (its own dense experts).
template <typename T>
void moe_forward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, int64_t tokens,
                 const T* z_prev, MoeCache<T>& cache, T* y) {
  moe_forward(cfg, MoeWeights<T>::of(w), x, tokens, z_prev, cache, y);
}

// x and z_prev: the same buffers, unchanged, that moe_forward saw (the cache refers to x
// rather than copying it when inputs are not scaled).
// dy: [T, D]; dz_next: [T, E] gradient w.r.t. this layer's z from the next layer, or null;
// dbalance: dL/dL_b (beta / number of MoE layers in training). Accumulates into dx and
// dz_prev (when z_prev was given); writes every tensor of grad as `mode` says (added to, or
// written over: core/grad_mode.h). scratch: sized here, any contents.
template <typename T>
void moe_backward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, const T* z_prev,
                  MoeCache<T>& cache, const T* dy, const T* dz_next, double dbalance, T* dx,
                  T* dz_prev, MoeParams<T>& grad, MoeBackwardScratch<T>& scratch,
                  GradMode mode = GradMode::accumulate);

}  // namespace moepp
