#include "train/replicas.h"

#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "core/parallel.h"
#include "io/digest.h"
#include "moe/expert_parallel.h"

namespace moepp {

namespace {

// FFN expert tensors of every MoE layer: (tensor, expert index).
struct ExpertTensor {
  Tensor<float>* t;
  int expert;
};
std::vector<ExpertTensor> expert_tensors(ModelParams<float>& p) {
  std::vector<ExpertTensor> out;
  for (auto& layer : p.layers) {
    if (!layer.is_moe) continue;
    for (size_t e = 0; e < layer.moe.up.size(); ++e) {
      out.push_back({&layer.moe.up[e], int(e)});
      out.push_back({&layer.moe.down[e], int(e)});
    }
  }
  return out;
}

// Tensors summed over all ranks (everything when not expert parallel) and over replicas.
void shared_and_owned(const ModelConfig& cfg, ModelParams<float>& p, int ep_size, int ep_rank,
                      std::vector<Tensor<float>*>& shared, std::vector<Tensor<float>*>& owned) {
  std::unordered_set<const Tensor<float>*> experts;
  if (ep_size > 1) {
    const ExpertShard mine = ExpertShard::of(cfg.layer_moe(), ep_size, ep_rank);
    for (const auto& x : expert_tensors(p)) {
      experts.insert(x.t);
      if (mine.owns(x.expert)) owned.push_back(x.t);
    }
  }
  p.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
    if (!experts.count(&t)) shared.push_back(&t);
  });
}

double squared_norm(const std::vector<Tensor<float>*>& tensors) {
  double sq = 0;
  for (auto* t : tensors) sq += squared_norm(*t);
  return sq;
}

// FNV-1a, 64-bit: a digest every rank computes the same way.
constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;

}  // namespace

void split_by_sharing(const ModelConfig& cfg, ModelParams<float>& grads, const Collectives& comm,
                      std::vector<Tensor<float>*>& shared, std::vector<Tensor<float>*>& owned) {
  shared_and_owned(cfg, grads, comm.ep_size(), comm.ep_rank(), shared, owned);
}

double grad_norm(const ModelConfig& cfg, ModelParams<float>& grads, Collectives& comm) {
  std::vector<Tensor<float>*> shared, owned;
  shared_and_owned(cfg, grads, comm.ep_size(), comm.ep_rank(), shared, owned);
  double owned_sq = squared_norm(owned);
  if (comm.ep_size() > 1) comm.sum_group(&owned_sq, 1);
  return std::sqrt(squared_norm(shared) + owned_sq);
}

void release_foreign_experts(const ModelConfig& cfg, ModelParams<float>& p, const Collectives& comm) {
  if (comm.ep_size() <= 1) return;
  for (auto& layer : p.layers)
    if (layer.is_moe) release_foreign_experts(cfg.layer_moe(), layer.moe, comm.ep_size(), comm.ep_rank());
}

void collect_experts_for_checkpoint(const ModelConfig& cfg, ModelParams<float>& params, AdamW& opt,
                                    Collectives& comm) {
  // Rank 0's group holds every expert between its ranks; the other groups hold copies.
  if (comm.ep_size() <= 1 || comm.dp_rank() != 0) return;
  const int per_rank = cfg.layer_moe().num_ffn / comm.ep_size();
  for (ModelParams<float>* p : {&params, &opt.m(), &opt.v()})
    for (const auto& x : expert_tensors(*p)) {
      const int owner = x.expert / per_rank;
      if (owner == 0) continue;
      if (comm.rank() == 0) x.t->resize(x.t->shape());
      comm.group_send(x.t->data(), x.t->numel() * int64_t(sizeof(float)), owner, 0);
    }
}

void keep_only_own_experts(const ModelConfig& cfg, ModelParams<float>& params, AdamW& opt, const Collectives& comm) {
  for (ModelParams<float>* p : {&params, &opt.m(), &opt.v()}) release_foreign_experts(cfg, *p, comm);
}

std::unordered_set<const Tensor<float>*> foreign_experts(const ModelConfig& cfg, const ModelParams<float>& params,
                                                         const Collectives& comm) {
  std::unordered_set<const Tensor<float>*> out;
  if (comm.ep_size() <= 1) return out;
  const ExpertShard mine = ExpertShard::of(cfg.layer_moe(), comm.ep_size(), comm.ep_rank());
  for (const auto& x : expert_tensors(const_cast<ModelParams<float>&>(params)))  // read only
    if (!mine.owns(x.expert)) out.insert(x.t);
  return out;
}

uint64_t replicated_digest(const ModelConfig& cfg, const ModelParams<float>& params, int ep_size) {
  auto& p = const_cast<ModelParams<float>&>(params);  // read only: shared_and_owned walks non-const
  std::vector<Tensor<float>*> shared, owned;
  shared_and_owned(cfg, p, ep_size, 0, shared, owned);
  // digest_bytes over each tensor's bits (chunked on all threads, the same at any thread
  // count), the tensors' digests folded in order.
  uint64_t h = kFnvOffset;
  for (auto* t : shared) {
    const uint64_t d = digest_bytes(reinterpret_cast<const uint8_t*>(t->data()), size_t(t->numel()) * sizeof(float));
    h = (h ^ d) * kFnvPrime;
  }
  return h;
}

void check_replicas_agree(const ModelConfig& cfg, const ModelParams<float>& params, Collectives& comm, int64_t step) {
  uint64_t lo = 0, hi = 0;
  comm.min_max_all(replicated_digest(cfg, params, comm.ep_size()), lo, hi);
  MOEPP_CHECK(lo == hi, "train: after step ", step, " the ranks hold different replicated weights (digests ", lo,
              " to ", hi, "); the run is no longer one model");
}

void check_ranks_agree(Collectives& comm, const std::string& job) {
  uint64_t h = kFnvOffset;
  for (unsigned char ch : job) h = (h ^ ch) * kFnvPrime;
  uint64_t lo = 0, hi = 0;
  comm.min_max_all(h, lo, hi);
  MOEPP_CHECK(lo == hi, "train: the ranks were started with different configurations (model, options or data); "
              "every rank must run the same command on the same data");
}

void sum_routing(std::vector<RoutingStats>& per_layer, Collectives& comm) {
  std::vector<double> v;
  for (const auto& s : per_layer) {
    v.push_back(double(s.tokens));
    v.push_back(double(s.dropped));
    for (int64_t k : s.slots_by_kind) v.push_back(double(k));
    for (int64_t k : s.ffn_load) v.push_back(double(k));
  }
  comm.sum_all(v.data(), int64_t(v.size()));
  size_t at = 0;
  for (auto& s : per_layer) {
    s.tokens = int64_t(v[at++]);
    s.dropped = int64_t(v[at++]);
    for (auto& k : s.slots_by_kind) k = int64_t(v[at++]);
    for (auto& k : s.ffn_load) k = int64_t(v[at++]);
  }
}

}  // namespace moepp
