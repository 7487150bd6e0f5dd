// RowBatch: the rows one decoder step runs and where their keys and values live.
// Training: `batch` sequences of `seq` rows at positions 0..seq-1; a layer keeps its keys
// and values (and the attention probabilities, for the backward) in its own cache.
// Inference: rows of several sequences, each at its own position, each row's keys and
// values stored into, and attention read from, its sequence's KvCache.
#pragma once
#include <cstdint>

#include "model/kv_cache.h"

namespace moepp {

template <typename T>
struct RowBatch {
  int64_t rows = 0;
  const int32_t* positions = nullptr;  // [rows]
  int64_t batch = 0, seq = 0;          // training
  KvCache<T>* const* caches = nullptr;  // inference: [rows], the row's sequence
  bool training() const { return caches == nullptr; }
};

}  // namespace moepp
