#include "model/kv_cache.h"

#include "core/error.h"

namespace moepp {

template <typename T>
KvCache<T>::KvCache(const ModelConfig& cfg, int64_t capacity) : capacity_(capacity) {
  MOEPP_CHECK(capacity >= 1, "kv cache: capacity must be positive, not ", capacity);
  // The same limit, in the same words, as model_forward: the f32, bf16 and q8_0 paths
  // refuse a sequence the model was not built for alike.
  MOEPP_CHECK(capacity <= cfg.max_position_embeddings, "model: sequence of ", capacity,
              " tokens exceeds max_position_embeddings ", cfg.max_position_embeddings);
  const int64_t kvD = int64_t(cfg.num_key_value_heads) * cfg.head_dim();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    k_.emplace_back(Shape{capacity, kvD});
    v_.emplace_back(Shape{capacity, kvD});
  }
}

template class KvCache<float>;
template class KvCache<double>;

}  // namespace moepp
