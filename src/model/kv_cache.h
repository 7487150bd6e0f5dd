// KvCache: one sequence's keys and values, per layer [capacity, kv_heads * head_dim] after
// RoPE, and how many positions are filled. A decoder step (model/decoder.h) appends the
// keys and values of the sequence's new tokens at positions length().. and advances the
// length; many sequences, each with its own cache, can go through the same step.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace moepp {

template <typename T>
class KvCache {
 public:
  // capacity: the most positions the sequence will hold, at most max_position_embeddings.
  KvCache(const ModelConfig& cfg, int64_t capacity);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void reset() { length_ = 0; }
  // Keys and values of `layer`, [capacity, kvD]; positions >= length() are not yet written.
  T* keys(int layer) { return k_[size_t(layer)].data(); }
  T* values(int layer) { return v_[size_t(layer)].data(); }
  // The decoder step, once every layer holds the n new positions.
  void advance(int64_t n) { length_ += n; }

 private:
  int64_t capacity_ = 0, length_ = 0;
  std::vector<Tensor<T>> k_, v_;
};

}  // namespace moepp
