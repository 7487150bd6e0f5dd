// KvCache: one sequence's keys and values after RoPE, per layer [kv_heads, capacity,
// head_dim] (each kv head's positions one after another, so that attention over a head
// reads one stream), and how many positions are filled. A decoder step (model/decoder.h) appends the
// keys and values of the sequence's new tokens at positions length().. and advances the
// length; many sequences, each with its own cache, can go through the same step.
//
// The cache holds T (f32 for inference), or bf16 (--kv-dtype bf16: half the memory and half
// the bytes a long context's attention reads; keys and values rounded to nearest even as
// they are stored, the attention's arithmetic f32). The steps a cache goes through must
// all use the same kind (decoder_step checks).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/uninit_vector.h"
#include "model/config.h"

namespace moepp {

enum class KvDtype { f32, bf16 };  // f32: the cache's element type T (f64 for the verification path)
const char* kv_dtype_name(KvDtype d);
KvDtype parse_kv_dtype(const std::string& name);  // "f32" or "bf16"; anything else is an error naming it

enum class WeightType;  // kernels/quant.h
// The cache's type where none is named (--kv-dtype auto, and the library's generate and
// logits): f32 beside f32 weights, bf16 beside bf16, q8_0 and q4 ones, whose own rounding
// already exceeds a bf16 cache's, as llama.cpp (f16) and vLLM (the activations' type) keep
// 16-bit caches by default. docs/quantization.md, "The KV cache".
KvDtype default_kv_dtype(WeightType weights);
// "auto" (default_kv_dtype(weights)), "f32" or "bf16"; anything else is an error naming it.
KvDtype parse_kv_dtype(const std::string& name, WeightType weights);

template <typename T>
class KvCache {
 public:
  // capacity: the most positions the sequence will hold, at most max_position_embeddings.
  // bf16 needs T = float.
  KvCache(const ModelConfig& cfg, int64_t capacity, KvDtype dtype = KvDtype::f32);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  KvDtype dtype() const { return dtype_; }
  void reset() { length_ = 0; }
  // Keys and values of `layer`, [kv_heads, capacity, head_dim], as T (dtype f32) or as bf16
  // bits (dtype bf16): position j of kv head g at g * head_stride() + j * head_dim.
  // Positions >= length() are not yet written.
  const T* keys(int layer) const { return k_[size_t(layer)].data(); }
  const T* values(int layer) const { return v_[size_t(layer)].data(); }
  const uint16_t* keys_bf16(int layer) const { return k16_[size_t(layer)].data(); }
  const uint16_t* values_bf16(int layer) const { return v16_[size_t(layer)].data(); }
  int64_t head_stride() const { return capacity_ * head_dim_; }
  // Stores the key and value rows [kv_heads * head_dim] of position pos in `layer` (rounded
  // to bf16 in a bf16 cache).
  void store(int layer, int64_t pos, const T* key, const T* value);
  // The decoder step, once every layer holds the n new positions.
  void advance(int64_t n) { length_ += n; }
  // Takes the first n positions of `from` (a cache of the same model and dtype) as this
  // cache's whole content: a prompt that begins with tokens another sequence already ran
  // starts from their keys and values (serve's prompt cache, serve/scheduler.h).
  void copy_prefix(const KvCache& from, int64_t n);
  // Bytes one position takes over all layers, keys and values.
  static int64_t bytes_per_position(const ModelConfig& cfg, KvDtype dtype);

 private:
  int64_t capacity_ = 0, length_ = 0, kv_heads_ = 0, head_dim_ = 0;
  KvDtype dtype_ = KvDtype::f32;
  std::vector<Tensor<T>> k_, v_;
  std::vector<UninitVector<uint16_t>> k16_, v16_;
};

}  // namespace moepp
