#include "train/gradient_sync.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_set>

#include "core/error.h"
#include "train/replicas.h"

namespace moepp {

namespace {

// The readiness slot of a tensor, from its SPEC name: model_backward finishes the head
// first, then the layers from last to first, then the embedding.
size_t slot_of(const std::string& name, int layers) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) == 0) {
    const int l = std::stoi(name.substr(prefix.size()));
    MOEPP_CHECK(l >= 0 && l < layers, "gradient sync: tensor ", name, " names a layer the model lacks");
    return size_t(layers - l);
  }
  if (name == "model.embed_tokens.weight") return size_t(layers) + 1;
  return 0;  // the final norm and an untied LM head
}

}  // namespace

GradientSync::GradientSync(const ModelConfig& cfg, ModelParams<float>& grads, Collectives& comm, int64_t bucket_floats)
    : comm_(comm), layers_(cfg.num_hidden_layers) {
  std::vector<Tensor<float>*> shared, owned;
  split_by_sharing(cfg, grads, comm, shared, owned);
  // Every tensor with its slot, in readiness order (for_each order within a slot).
  std::vector<std::pair<size_t, Tensor<float>*>> order;
  grads.for_each(cfg, [&](const std::string& name, Tensor<float>& t) { order.push_back({slot_of(name, layers_), &t}); });
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  bucket_of_part_.assign(size_t(layers_) + 2, {});
  for (const bool replicas : {false, true}) {
    const std::unordered_set<const Tensor<float>*> members(replicas ? owned.begin() : shared.begin(),
                                                           replicas ? owned.end() : shared.end());
    int64_t filled = 0;
    bool open = false;
    for (const auto& [slot, t] : order) {
      if (!members.count(t)) continue;
      if (!open || filled + t->numel() > bucket_floats) {
        buckets_.push_back(Bucket{});
        buckets_.back().over_replicas = replicas;
        filled = 0;
        open = true;
      }
      buckets_.back().tensors.push_back(t);
      filled += t->numel();
      bucket_of_part_[slot].push_back(buckets_.size() - 1);
    }
  }
  for (auto& b : buckets_) b.waiting = int(b.tensors.size());
}

void GradientSync::start(Bucket& b) {
  b.started = true;
  float* v = b.tensors[0]->data();
  int64_t n = b.tensors[0]->numel();
  if (b.tensors.size() > 1) {
    b.staging.clear();
    for (auto* t : b.tensors) b.staging.insert(b.staging.end(), t->data(), t->data() + t->numel());
    v = b.staging.data();
    n = int64_t(b.staging.size());
  }
  if (b.over_replicas) comm_.start_sum_replicas(v, n);
  else comm_.start_sum_all(v, n);
}

void GradientSync::ready(int part) {
  MOEPP_CHECK(part >= -1 && part <= layers_, "gradient sync: part ", part, " of a model of ", layers_, " layers");
  const size_t slot = part == layers_ ? 0 : part >= 0 ? size_t(layers_ - part) : size_t(layers_) + 1;
  for (size_t i : bucket_of_part_[slot]) {
    Bucket& b = buckets_[i];
    if (--b.waiting == 0 && !b.started) start(b);
  }
  comm_.progress();
}

void GradientSync::finish() {
  for (auto& b : buckets_)
    if (!b.started) start(b);
  comm_.wait_sums();
  for (auto& b : buckets_) {
    if (b.tensors.size() > 1) {
      size_t at = 0;
      for (auto* t : b.tensors) {
        std::memcpy(t->data(), b.staging.data() + at, size_t(t->numel()) * sizeof(float));
        at += size_t(t->numel());
      }
    }
    b.waiting = int(b.tensors.size());
    b.started = false;
  }
}

}  // namespace moepp
