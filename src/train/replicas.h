// What keeps a multi-process run's ranks one training run (core/collectives.h): gradients
// summed over the ranks that share a parameter, the global gradient norm, each rank holding
// its own experts, expert shards collected for a checkpoint, and a check that replicas hold
// identical weights.
//
// Which ranks share what: every parameter but the FFN experts' is replicated on all ranks
// (router, gate maps, constant experts included); with an expert-parallel group of E ranks,
// FFN expert e lives on group rank e / (F/E) and is shared only with that rank's replicas.
// Each rank's gradients are its share of the batch's mean loss (model/transformer.h), so a
// sum over the sharing ranks gives the gradient of the whole batch.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/collectives.h"
#include "model/config.h"
#include "model/params.h"
#include "moe/routing_stats.h"
#include "train/optimizer.h"

namespace moepp {

// The gradient tensors summed over all ranks (all but the FFN experts when expert parallel)
// and those summed over this rank's replicas only (the experts it owns); GradientSync
// (train/gradient_sync.h) sums them.
void split_by_sharing(const ModelConfig& cfg, ModelParams<float>& grads, const Collectives& comm,
                      std::vector<Tensor<float>*>& shared, std::vector<Tensor<float>*>& owned);

// The L2 norm of the whole model's gradient after GradientSync::finish: the replicated part once,
// each expert once from its owner.
double grad_norm(const ModelConfig& cfg, ModelParams<float>& grads, Collectives& comm);

// Expert-parallel memory: each rank holds only the FFN experts it owns (weights, gradients,
// AdamW moments); the others keep their shapes without storage (release_foreign_experts in
// moe/expert_parallel.h). For a checkpoint, rank 0 takes a copy of every expert and its
// moments from the owners in its group (collect_experts_for_checkpoint: rank 0 then holds
// the whole model until keep_only_own_experts drops them again), and writes.
void release_foreign_experts(const ModelConfig& cfg, ModelParams<float>& p, const Collectives& comm);
void collect_experts_for_checkpoint(const ModelConfig& cfg, ModelParams<float>& params, AdamW& opt,
                                    Collectives& comm);
void keep_only_own_experts(const ModelConfig& cfg, ModelParams<float>& params, AdamW& opt, const Collectives& comm);

// The FFN expert tensors of params that other ranks of this rank's group own (none without
// expert parallelism): the optimizer skips them.
std::unordered_set<const Tensor<float>*> foreign_experts(const ModelConfig& cfg, const ModelParams<float>& params,
                                                         const Collectives& comm);

// A 64-bit digest of the parameters every rank must hold identically (all but the FFN
// experts when expert parallel), and the check that all ranks agree: throws naming the step.
uint64_t replicated_digest(const ModelConfig& cfg, const ModelParams<float>& params, int ep_size);
void check_replicas_agree(const ModelConfig& cfg, const ModelParams<float>& params, Collectives& comm, int64_t step);

// Throws on every rank unless all ranks passed the same text (what defines the job: model,
// options, data sizes).
void check_ranks_agree(Collectives& comm, const std::string& job);

// Pools each layer's routing statistics over all ranks.
void sum_routing(std::vector<RoutingStats>& per_layer, Collectives& comm);

}  // namespace moepp
