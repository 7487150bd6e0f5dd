// Inference through the decoder step: the new tokens of one or many sequences, each with
// its own KvCache and length, go through every layer together - the same router, the
// same expert GEMMs (so an expert's weights are read once per step for all the rows that
// chose it) - and attend each to its own sequence's cached positions. A step can mix a
// prefill of one sequence with single-token decodes of others (continuous batching).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/decoder_layer.h"
#include "model/decoder_weights.h"
#include "model/kv_cache.h"
#include "moe/routing_stats.h"

namespace moepp {

// n new tokens of one sequence, appended at positions cache->length() onwards.
template <typename T>
struct SequenceStep {
  KvCache<T>* cache = nullptr;
  const int32_t* ids = nullptr;
  int64_t n = 0;
};

// Buffers a decoder step reuses from one call to the next (they grow to the largest step).
template <typename T>
struct DecoderScratch {
  Tensor<T> x, last_rows, normed, rstd, z_carry;
  LayerCache<T> layer;
  std::vector<int32_t> positions;
  std::vector<KvCache<T>*> row_caches;
  std::vector<RoutingStats> routing;  // per MoE layer, over the rows of the last step
};

// Which rows get logits: every row (scoring, `moepp logits`), or only each sequence's last
// (generation: the LM head is the largest matrix, and prefill needs one row of it).
enum class LogitRows { all, last };

// Runs the steps' tokens (rows in step order) through the decoder, advances each cache by
// its step's n, and writes logits [rows, V] (LogitRows::all) or [steps, V] (::last). Each
// cache may appear once; every cache must have room for its step.
template <typename T>
void decoder_step(const ModelConfig& cfg, const DecoderWeights<T>& w, std::span<const SequenceStep<T>> steps,
                  DecoderScratch<T>& scratch, Tensor<T>& logits, LogitRows which = LogitRows::all);

}  // namespace moepp
