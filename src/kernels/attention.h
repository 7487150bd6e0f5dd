// Causal scaled-dot-product attention with grouped-query heads (Hq a multiple of Hkv; q
// head h reads kv head h / (Hq/Hkv)). Scale 1/sqrt(head_dim), softmax in the compute type.
// The forward keeps the probabilities [B, Hq, T, T] for the backward.
#pragma once
#include <cstdint>

namespace moepp {

struct AttentionShape {
  int64_t batch = 1, seq = 1, q_heads = 1, kv_heads = 1, head_dim = 1;
};

// q: [B, T, Hq, hd]; k, v: [B, T, Hkv, hd]; out: [B, T, Hq, hd]; probs: [B, Hq, T, T].
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs,
                       const AttentionShape& s);

// dq, dk, dv += their gradients.
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                        T* dq, T* dk, T* dv, const AttentionShape& s);

}  // namespace moepp
