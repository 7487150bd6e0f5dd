// The training forward of causal attention in tiles (AVX-512): attention_forward<float>
// (kernels/attention.h) comes here where attention_in_tiles() (kernels/attention_tiles.h).
// Each task is a run of up to 64 queries (consecutive rows of one sequence times the G
// query heads of one kv head) against every key its last row sees: the scores Q K^T in f32
// tiles, held transposed (16 queries to a vector), in L2 at 2048 positions; an exact
// softmax down their columns, whose maxima and inverse sums are kept (the softmax stats of
// kernels/attention.h, from which the backward recomputes the probabilities bit for bit:
// softmax_probs_transposed, kernels/attention_tiles.h); then P V, in f32 tiles or, with
// bf16_values, on bf16 pairs of keys (kernels/attention_pairs.h: train --precision bf16,
// where attention_bf16_available). Prefill, which keeps nothing, takes the online softmax
// of kernels/attention_runs instead: it never holds more than a block of scores.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace moepp {

// q: [B, T, Hq, hd]; k, v: [B, T, Hkv, hd]; out: [B, T, Hq, hd]; stats: [B, Hq, 2, T].
void attention_forward_tiles(const float* q, const float* k, const float* v, float* out, float* stats,
                             const AttentionShape& s, bool bf16_values);

}  // namespace moepp
