#include "model/kv_cache.h"

#include <type_traits>

#include "core/error.h"
#include "kernels/quant.h"

namespace moepp {

const char* kv_dtype_name(KvDtype d) { return d == KvDtype::bf16 ? "bf16" : "f32"; }

KvDtype parse_kv_dtype(const std::string& name) {
  if (name == "f32") return KvDtype::f32;
  if (name == "bf16") return KvDtype::bf16;
  fail("KV cache dtype \"", name, "\" is not f32 or bf16");
}

KvDtype default_kv_dtype(WeightType weights) { return weights == WeightType::f32 ? KvDtype::f32 : KvDtype::bf16; }

KvDtype parse_kv_dtype(const std::string& name, WeightType weights) {
  if (name == "auto") return default_kv_dtype(weights);
  if (name == "f32" || name == "bf16") return parse_kv_dtype(name);
  fail("KV cache dtype \"", name, "\" is not auto, f32 or bf16");
}

template <typename T>
KvCache<T>::KvCache(const ModelConfig& cfg, int64_t capacity, KvDtype dtype) : capacity_(capacity), dtype_(dtype) {
  MOEPP_CHECK(capacity >= 1, "kv cache: capacity must be positive, not ", capacity);
  // The same limit, in the same words, as model_forward: the f32, bf16 and q8_0 paths
  // refuse a sequence the model was not built for alike.
  MOEPP_CHECK(capacity <= cfg.max_position_embeddings, "model: sequence of ", capacity,
              " tokens exceeds max_position_embeddings ", cfg.max_position_embeddings);
  constexpr bool f32_inference = std::is_same_v<T, float>;
  MOEPP_CHECK(dtype == KvDtype::f32 || f32_inference, "kv cache: bf16 keys and values need f32 inference");
  const int64_t kvD = int64_t(cfg.num_key_value_heads) * cfg.head_dim();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    if (dtype == KvDtype::bf16) {
      k16_.emplace_back(size_t(capacity * kvD));
      v16_.emplace_back(size_t(capacity * kvD));
    } else {
      k_.emplace_back(Shape{capacity, kvD});
      v_.emplace_back(Shape{capacity, kvD});
    }
  }
}

template <typename T>
int64_t KvCache<T>::bytes_per_position(const ModelConfig& cfg, KvDtype dtype) {
  return int64_t(cfg.num_hidden_layers) * 2 * cfg.num_key_value_heads * cfg.head_dim() *
         int64_t(dtype == KvDtype::bf16 ? 2 : sizeof(T));
}

template class KvCache<float>;
template class KvCache<double>;

}  // namespace moepp
