// The decoder stack (SPEC §1): embedding -> layers {attention sublayer, then an MoE++ layer
// or a dense MLP on rms2(h), gating residuals carried from MoE layer to MoE layer across
// dense layers} -> final norm -> LM head, and the training loss
//   L = mean cross-entropy of next-token targets + balance_coef * mean over MoE layers of L_b.
// model_forward fills a ModelCache; model_backward walks it back into a ModelParams of
// gradients. Batches are B sequences of S tokens, each at positions 0..S-1. Each layer is
// the one decoder step (model/decoder_layer.h) that inference runs too.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/collectives.h"
#include "core/grad_mode.h"
#include "core/tensor.h"
#include "core/uninit_vector.h"
#include "model/config.h"
#include "model/decoder_layer.h"
#include "model/params.h"
#include "moe/routing_stats.h"

namespace moepp {

template <typename T>
struct ModelCache {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> ids, positions;
  std::vector<LayerCache<T>> layers;
  Tensor<T> x_final, normed, rstd_final;  // [BT, D], [BT, D], [BT]
  Tensor<T> logits;                       // [BT, V]
  Tensor<T> dlogits;                      // [BT, V] backward scratch, kept between steps
  UninitVector<uint16_t> dlogits_bf16;    // [BT, V] the same rounded, under bf16 products (then dlogits is not written)
  Tensor<T> dnormed, dx;                  // [BT, D] backward scratch: dL/d normed, dL/dx of a layer
  LayerBackwardScratch<T> layer_scratch;  // the layers' backward scratch, one for all
  // A multi-process run's ranks (null: one process). Set, this rank's B sequences are its
  // share of one batch spread over all ranks: the losses model_backward returns and the
  // gradients it writes are those of the whole batch's mean loss (the gradients as this
  // rank's share, to be summed over ranks), and the MoE layers route as one batch.
  Collectives* comm = nullptr;
  // The MoE layers' capacity factor (SPEC §2.4): the trainer sets the config's, so that a
  // training step drops slots over capacity; 0 (every other forward: eval, logits) keeps
  // every slot, so a model's outputs never depend on what else is in the batch.
  double capacity_factor = 0.0;
  // Called by model_backward, on its thread, as parts of the gradient become final (set by
  // a distributed trainer to start summing them while the backward goes on): part L (the
  // number of layers) for the final norm and an untied LM head, part l after layer l
  // (l = L-1 down to 0), part -1 for the embedding (and a tied LM head).
  std::function<void(int part)> grads_ready;
};

struct LossParts {
  double loss = 0, lm_loss = 0, balance_loss = 0;  // balance_loss: mean L_b, before the coefficient
};

// ids: [B, S]. Fills cache, including cache.logits.
template <typename T>
void model_forward(const ModelConfig& cfg, const ModelParams<T>& w, const int32_t* ids,
                   int64_t B, int64_t S, ModelCache<T>& cache);

// The loss of the last forward for targets [B, S] (a target < 0 is ignored).
template <typename T>
LossParts model_loss(const ModelConfig& cfg, const ModelCache<T>& cache, const int32_t* targets);

// Loss of the last forward and its gradient, accumulated (+=) into grad, or with
// GradMode::overwrite written over whatever grad held (a step's first micro-batch: the
// MoE layers write their experts' gradients directly; the rest is zeroed first).
template <typename T>
LossParts model_backward(const ModelConfig& cfg, const ModelParams<T>& w, ModelCache<T>& cache,
                         const int32_t* targets, ModelParams<T>& grad, GradMode mode = GradMode::accumulate);

// Next-token targets for one sequence: ids[t+1], and -1 for the last position.
std::vector<int32_t> next_token_targets(const int32_t* ids, int64_t n);

// Routing statistics of the last forward, per MoE layer in layer order.
template <typename T>
std::vector<RoutingStats> routing_stats_of(const ModelConfig& cfg, const ModelCache<T>& cache);

}  // namespace moepp
