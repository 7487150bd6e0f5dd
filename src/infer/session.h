// Session: incremental inference on one sequence with a KV cache. append() runs the new
// tokens through the decoder (prefill when many, decode when one), attending to every
// cached position, and returns their logits. The router path is the training one, so a
// token routed to zero-computation experts costs no FFN work here either.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"
#include "model/dense_mlp.h"
#include "model/packed_model.h"
#include "moe/moe_layer.h"

namespace moepp {

template <typename T>
class Session {
 public:
  // max_len: the most tokens the session will hold, at most max_position_embeddings.
  Session(const ModelConfig& cfg, const ModelParams<T>& params, int64_t max_len);
  // Inference on compact weights (T = float only); the model must outlive the session.
  Session(const PackedModel& model, int64_t max_len)
    requires std::is_same_v<T, float>;

  // Appends n tokens; logits becomes [n, vocab].
  void append(const int32_t* ids, int64_t n, Tensor<T>& logits);
  int64_t length() const { return len_; }
  void reset() { len_ = 0; }
  // Routing statistics of the last append, per MoE layer.
  std::vector<RoutingStats> last_routing() const;

 private:
  const ModelConfig& cfg_;
  const ModelParams<T>& w_;
  int64_t max_len_, len_ = 0;
  std::vector<Tensor<T>> k_, v_;  // per layer [max_len, kvD]
  std::vector<MoeCache<T>> moe_;  // per layer (MoE layers only used)
  std::vector<DenseMlpCache<T>> mlp_;
  const PackedModel* packed_ = nullptr;

  // y (+)= x W^T for the weight `dense` (or its packed copy when the model is packed).
  void project(const Tensor<T>& dense, const PackedMatrix* packed, const T* x, int64_t n, T* y, int64_t ldy,
               bool accumulate) const;
};

}  // namespace moepp
