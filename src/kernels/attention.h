// Causal scaled-dot-product attention with grouped-query heads (Hq a multiple of Hkv; q
// head h reads kv head h / (Hq/Hkv)). Scale 1/sqrt(head_dim), softmax in the compute type.
//
// One kernel family serves training, prefill and decode: attention_rows_forward runs query
// rows against key/value histories, each row against its own (a row of a training batch
// against the keys of its sequence so far; a new token against its sequence's KV cache),
// one task per (row, kv head) so the Hq/Hkv query heads of a group read each key and value
// row once. attention_forward is the training batch in that form, keeping the
// probabilities [B, Hq, T, T] for attention_backward.
#pragma once
#include <algorithm>
#include <cstdint>

namespace moepp {

struct AttentionShape {
  int64_t batch = 1, seq = 1, q_heads = 1, kv_heads = 1, head_dim = 1;
};

// Where each query row finds its keys and values. Row r attends positions
// 0..context[r]-1 of its history: key j of kv head g at keys[r] + j * kv_stride + g * head_dim.
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
  // Optional (training): row r's probabilities for q head h go to probs[r] + h * probs_head_stride,
  // a row probs_length long, zero past its context at least to the end of its block of 16
  // positions (probs_written_end, below).
  T* const* probs = nullptr;
  int64_t probs_head_stride = 0, probs_length = 0;
};

// A row of kept probabilities that sees `seen` positions is written at least up to here:
// zero past `seen` to the end of its block of 16 (a tile of the backward reads its 16
// queries' rows as far as its last one sees). Beyond, no backward reads, and the forward
// writes no more than the zeros of the row's run (its rows as far as the last one sees):
// writing the whole upper triangle's zeros took ~12% of a 2048-position training forward.
inline int64_t probs_written_end(int64_t seen, int64_t length) {
  return std::max(seen, std::min(length, (seen + 15) / 16 * 16));
}

// q: [rows, Hq, hd] (row stride Hq*hd); out: [rows, Hq, hd].
template <typename T>
void attention_rows_forward(const T* q, const AttentionRows<T>& a, T* out);

// A training batch: q: [B, T, Hq, hd]; k, v: [B, T, Hkv, hd]; out: [B, T, Hq, hd]; probs: [B, Hq, T, T],
// row i written at least up to probs_written_end(i + 1, T): what attention_backward reads. In a bf16 GemmPrecisionScope, f32 attention_forward and
// attention_backward run their products but the scores on bf16 operands where
// attention_products_bf16 (kernels/attention_bf16.h).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs,
                       const AttentionShape& s);

// dq, dk, dv += their gradients.
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                        T* dq, T* dk, T* dv, const AttentionShape& s);

}  // namespace moepp
