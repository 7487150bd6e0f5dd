// The training backward of causal attention in tiles (AVX-512 f32): for one sequence and
// one kv head with its G query heads, 16 queries at a time, the probabilities P recomputed
// from q, k and the forward's softmax stats (tiles::softmax_probs_transposed), then
//   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) * scale;  dQ = dS K;  dK += dS^T Q;
//   dV += P^T dO,
// with the scores' transposed layout of kernels/attention_tiles.h.
// attention_backward (kernels/attention.h) sends each (sequence, kv head) task here where
// attention_in_tiles() (kernels/attention_tiles.h), and runs the row loop elsewhere; the two agree
// up to f32 summation order.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace moepp {

// Sequence b's rows of a training batch laid out as attention_backward's (q, dout, dq:
// [B, T, Hq, hd]; k, v, dk, dv: [B, T, Hkv, hd]; stats: [B, Hq, 2, T]); adds into dq, dk
// and dv for the G = Hq / Hkv query heads of kv head kvh.
void attention_backward_tiles(const float* q, const float* k, const float* v, const float* stats, const float* dout,
                              float* dq, float* dk, float* dv, const AttentionShape& s, int64_t b, int64_t kvh);

}  // namespace moepp
