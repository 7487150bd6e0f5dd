// Expert parallelism for the FFN experts of a MoE layer. Each rank routes its own tokens
// (the router is replicated); its FFN rows, already grouped by expert in dispatch order,
// are therefore grouped by owning rank too, and go to their owners in one all-to-all
// (row counts per expert first, so nothing is dropped). Each owner regroups what it received
// by expert, runs its experts' grouped GEMMs, and sends the outputs back the same way; the
// backward mirrors both exchanges. Zero-computation slots never enter the FFN block, so they
// never cross ranks: the copy and constant experts run where their tokens are.
//
// Each rank holds every expert's tensors (checkpoints gather into them) but computes and
// updates only its own: a non-local expert receives no rows, so its gradient stays zero.
#pragma once
#include <cstdint>
#include <vector>

#include "core/collectives.h"
#include "core/grad_mode.h"
#include "core/tensor.h"
#include "moe/dispatch.h"
#include "moe/experts/ffn.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_weights.h"

namespace moepp {

// The FFN experts owned by group rank q of an expert-parallel group of `ep_size` ranks.
struct ExpertShard {
  int first = 0, count = 0;
  static ExpertShard of(const MoeConfig& cfg, int ep_size, int q);
  bool owns(int e) const { return e >= first && e < first + count; }
};

// Throws unless ep_size divides the layer's FFN expert count.
void check_expert_parallel(const MoeConfig& cfg, int ep_size);

// Frees the storage of the FFN experts group rank q does not own; their shapes stay and
// data() becomes null (Tensor::declare). An expert-parallel rank then holds only its own
// experts' weights, gradients and moments; the layer never reads the others.
template <typename T>
void release_foreign_experts(const MoeConfig& cfg, MoeParams<T>& p, int ep_size, int q);

template <typename T>
struct ExpertParallelCache {
  std::vector<int64_t> send_rows, recv_rows;  // [E]: rows to / from each group rank
  std::vector<int64_t> recv_counts;           // [E * L]: rows from rank s for local expert l
  std::vector<int64_t> owner_row_of;          // owner row r (by expert) = received row owner_row_of[r]
  DispatchPlan plan;                          // the owner's rows by expert (others empty)
  FfnCache<T> ffn;                            // the owner's FFN activations
  Tensor<T> staging;                          // rows in received (by source) order
  int64_t remote_rows = 0;                    // this rank's FFN rows sent to another rank
};

// Like ffn_experts_forward over this rank's plan: expects local.x filled in plan order and
// writes local.o in plan order, the experts computed by their owners.
template <typename T>
void ffn_experts_forward_parallel(const MoeConfig& cfg, const MoeWeights<T>& w, const DispatchPlan& plan,
                                  FfnCache<T>& local, Collectives& comm, ExpertParallelCache<T>& ep);

// Like ffn_experts_backward: d_o [R, D] in plan order; writes dx [R, D] in plan order and the
// gradients of this rank's experts as `mode` says (the other experts' are zeroed when
// overwriting, left alone when accumulating). owner_d_o, d_h, d_u and owner_d_xg: scratch
// for the owner's output, hidden, pre-activation and input gradients, its rows in owner
// order (sized here; the layers of a step share them, MoeBackwardScratch, where each
// layer's own cache would hold them between steps).
template <typename T>
void ffn_experts_backward_parallel(const MoeConfig& cfg, const MoeParams<T>& w, const DispatchPlan& plan,
                                   const T* d_o, T* dx, MoeParams<T>& grad, GradMode mode, Collectives& comm,
                                   ExpertParallelCache<T>& ep, Tensor<T>& owner_d_o, Tensor<T>& d_h,
                                   Tensor<T>& d_u, Tensor<T>& owner_d_xg);

}  // namespace moepp
