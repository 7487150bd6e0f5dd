// Causal scaled-dot-product attention with grouped-query heads (Hq a multiple of Hkv; q
// head h reads kv head h / (Hq/Hkv)). Scale 1/sqrt(head_dim), softmax in the compute type.
//
// Prefill and decode go through attention_rows_forward: query rows against key/value
// histories, each row against its own (a prompt's rows against the keys of their sequence
// so far; a new token against its sequence's KV cache), one task per (row, kv head) so the
// Hq/Hkv query heads of a group read each key and value row once. Training goes through
// attention_forward and attention_backward over whole sequences: the forward keeps, of
// each query row's softmax, only its largest score and the inverse of its sum (O(T)
// memory, where the probabilities took [B, Hq, T, T]: 2.4 GB at the paper-0.6b preset's
// 2048 positions), and the backward recomputes the probabilities from q, k and those two,
// as the forward took them.
#pragma once
#include <cstdint>

namespace moepp {

struct AttentionShape {
  int64_t batch = 1, seq = 1, q_heads = 1, kv_heads = 1, head_dim = 1;
};

// Where each query row finds its keys and values. Row r attends positions
// 0..context[r]-1 of its history: key j of kv head g at keys[r] + j * kv_stride +
// g * head_strides[r] (g * head_dim where head_strides is null: a row's kv heads side by
// side; a KV cache stores each head's positions one after another: model/kv_cache.h).
template <typename T>
struct AttentionRows {
  int64_t rows = 0, q_heads = 1, kv_heads = 1, head_dim = 1;
  const T* const* keys = nullptr;    // [rows]
  const T* const* values = nullptr;  // [rows]
  // Or (T = float only): histories held as bf16 bits, same layout; used when set. The
  // products and the softmax stay f32: each key and value element is widened as read.
  const uint16_t* const* keys_bf16 = nullptr;
  const uint16_t* const* values_bf16 = nullptr;
  const int64_t* context = nullptr;  // [rows], each >= 1
  int64_t kv_stride = 0;
  const int64_t* head_strides = nullptr;  // [rows], or null
};

// What a training forward keeps of its softmax, [B, Hq, 2, T]: for query row i of head h in
// sequence b, the largest of its scores s_j = (q_i * scale) . k_j (j <= i) at
// softmax_max(stats, ...)[i] and 1 / sum_j exp(s_j - max) at softmax_inverse(stats, ...)[i].
// Its probabilities are p_j = exp(s_j - max) * inverse, which the backward recomputes.
template <typename T>
T* softmax_max(T* stats, int64_t b, int64_t h, const AttentionShape& s) {
  return stats + (b * s.q_heads + h) * 2 * s.seq;
}
template <typename T>
T* softmax_inverse(T* stats, int64_t b, int64_t h, const AttentionShape& s) {
  return softmax_max(stats, b, h, s) + s.seq;
}
inline int64_t softmax_stats_size(const AttentionShape& s) { return s.batch * s.q_heads * 2 * s.seq; }

// q: [rows, Hq, hd] (row stride Hq*hd); out: [rows, Hq, hd].
template <typename T>
void attention_rows_forward(const T* q, const AttentionRows<T>& a, T* out);

// A training batch: q: [B, T, Hq, hd]; k, v: [B, T, Hkv, hd]; out: [B, T, Hq, hd];
// stats: [B, Hq, 2, T] (softmax_max, softmax_inverse), what attention_backward reads. In a
// bf16 GemmPrecisionScope, f32 attention_forward and attention_backward run their products
// but the scores on bf16 operands where attention_products_bf16 (kernels/attention_bf16.h).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* stats, const AttentionShape& s);

// dq, dk, dv += their gradients; stats as the forward of the same q, k, v left them.
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* stats, const T* dout, T* dq, T* dk, T* dv,
                        const AttentionShape& s);

}  // namespace moepp
