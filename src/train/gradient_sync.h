// GradientSync: sums a training step's gradients over the ranks that share them while the
// backward pass is still running. The tensors are cut into buckets of about bucket_floats
// in the order model_backward finishes them (ModelCache::grads_ready: the head, the layers
// from last to first, the embedding); a bucket's non-blocking allreduce starts as soon as
// its last tensor is final - replicated tensors over all ranks, the experts a rank owns over
// their replicas (train/replicas.h says which is which). Every rank builds the same buckets
// and so starts the same sums in the same order. The object refers to the gradient tensors
// it was built over; they must outlive it and keep their storage.
#pragma once
#include <cstdint>
#include <vector>

#include "core/collectives.h"
#include "model/config.h"
#include "model/params.h"

namespace moepp {

class GradientSync {
 public:
  GradientSync(const ModelConfig& cfg, ModelParams<float>& grads, Collectives& comm,
               int64_t bucket_floats = int64_t(1) << 22);
  // ModelCache::grads_ready: the tensors of `part` hold their final values for this step.
  void ready(int part);
  // Starts the buckets still waiting, waits for every sum and copies multi-tensor buckets
  // back: the gradients are then summed over their sharing ranks. Ready for the next step.
  void finish();

 private:
  struct Bucket {
    std::vector<Tensor<float>*> tensors;
    bool over_replicas = false;  // an owned expert's: summed over its replicas only
    int waiting = 0;             // tensors not final yet in this step
    bool started = false;
    std::vector<float> staging;  // several tensors summed as one piece
  };
  void start(Bucket& b);

  Collectives& comm_;
  std::vector<Bucket> buckets_;
  // By readiness slot (0: the head, 1..L: layers L-1..0, L+1: the embedding), the bucket of
  // each tensor that part finishes.
  std::vector<std::vector<size_t>> bucket_of_part_;
  int layers_ = 0;
};

}  // namespace moepp
