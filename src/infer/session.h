// Session: incremental inference on one sequence - a KvCache and the decoder step
// (model/decoder.h) with one sequence in it. append() runs the new tokens through the
// decoder (prefill when many, decode when one), attending to every cached position, and
// returns their logits. To decode many sequences together, call decoder_step with one
// SequenceStep per sequence instead.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/decoder_weights.h"
#include "model/kv_cache.h"
#include "model/packed_model.h"
#include "model/params.h"

namespace moepp {

template <typename T>
class Session {
 public:
  // max_len: the most tokens the session will hold, at most max_position_embeddings.
  // The parameters (or packed model) must outlive the session.
  // kv: the KV cache's element type (bf16 needs T = float; model/kv_cache.h).
  Session(const ModelConfig& cfg, const ModelParams<T>& params, int64_t max_len, KvDtype kv = KvDtype::f32);
  Session(const PackedModel& model, int64_t max_len, KvDtype kv = KvDtype::f32)
    requires std::is_same_v<T, float>;

  // Appends n tokens; logits becomes [n, vocab] (LogitRows::last: [1, vocab], the last token's).
  void append(const int32_t* ids, int64_t n, Tensor<T>& logits, LogitRows which = LogitRows::all);
  int64_t length() const { return cache_.length(); }
  void reset() { cache_.reset(); }
  // Routing statistics of the last append, per MoE layer.
  const std::vector<RoutingStats>& last_routing() const { return scratch_.routing; }

 private:
  const ModelConfig& cfg_;
  DecoderWeights<T> weights_;
  KvCache<T> cache_;
  DecoderScratch<T> scratch_;
};

}  // namespace moepp
