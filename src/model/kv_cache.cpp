#include "model/kv_cache.h"

#include <algorithm>
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
  kv_heads_ = cfg.num_key_value_heads;
  head_dim_ = cfg.head_dim();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    if (dtype == KvDtype::bf16) {
      k16_.emplace_back(size_t(kv_heads_ * capacity * head_dim_));
      v16_.emplace_back(size_t(kv_heads_ * capacity * head_dim_));
    } else {
      k_.emplace_back(Shape{kv_heads_, capacity, head_dim_});
      v_.emplace_back(Shape{kv_heads_, capacity, head_dim_});
    }
  }
}

template <typename T>
void KvCache<T>::store(int layer, int64_t pos, const T* key, const T* value) {
  const int64_t at = pos * head_dim_;
  for (int64_t g = 0; g < kv_heads_; ++g) {
    const int64_t to = g * head_stride() + at, from = g * head_dim_;
    if (dtype_ == KvDtype::bf16) {
      if constexpr (std::is_same_v<T, float>) {
        round_to_bf16(key + from, head_dim_, k16_[size_t(layer)].data() + to);
        round_to_bf16(value + from, head_dim_, v16_[size_t(layer)].data() + to);
      }
    } else {
      std::copy_n(key + from, head_dim_, k_[size_t(layer)].data() + to);
      std::copy_n(value + from, head_dim_, v_[size_t(layer)].data() + to);
    }
  }
}

template <typename T>
void KvCache<T>::copy_prefix(const KvCache& from, int64_t n) {
  MOEPP_CHECK(from.dtype_ == dtype_, "kv cache: cannot copy ", kv_dtype_name(from.dtype_), " positions into a ",
              kv_dtype_name(dtype_), " cache");
  MOEPP_CHECK(from.k_.size() == k_.size() && from.k16_.size() == k16_.size(),
              "kv cache: cannot copy positions between caches of different models");
  MOEPP_CHECK(n >= 0 && n <= from.length_ && n <= capacity_, "kv cache: cannot copy ", n, " positions (the source holds ",
              from.length_, ", this cache ", capacity_, ")");
  MOEPP_CHECK(from.kv_heads_ == kv_heads_ && from.head_dim_ == head_dim_,
              "kv cache: cannot copy positions between caches of different models");
  // Each kv head's first n positions: the heads start head_stride() apart, which differs
  // between caches of different capacities.
  const auto copy_heads = [&](const auto* src, auto* dst) {
    for (int64_t g = 0; g < kv_heads_; ++g)
      std::copy_n(src + g * from.head_stride(), n * head_dim_, dst + g * head_stride());
  };
  for (size_t l = 0; l < k_.size(); ++l) {
    copy_heads(from.k_[l].data(), k_[l].data());
    copy_heads(from.v_[l].data(), v_[l].data());
  }
  for (size_t l = 0; l < k16_.size(); ++l) {
    copy_heads(from.k16_[l].data(), k16_[l].data());
    copy_heads(from.v16_[l].data(), v16_[l].data());
  }
  length_ = n;
}

template <typename T>
int64_t KvCache<T>::bytes_per_position(const ModelConfig& cfg, KvDtype dtype) {
  return int64_t(cfg.num_hidden_layers) * 2 * cfg.num_key_value_heads * cfg.head_dim() *
         int64_t(dtype == KvDtype::bf16 ? 2 : sizeof(T));
}

template class KvCache<float>;
template class KvCache<double>;

}  // namespace moepp
