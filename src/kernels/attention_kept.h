// The training forward of causal attention in tiles (AVX-512): attention_forward<float>
// (kernels/attention.h) comes here where attention_in_tiles() (kernels/attention_tiles.h).
// Each task is a run of up to 64 queries (consecutive rows of one sequence times the G
// query heads of one kv head) against every key its last row sees: the scores Q K^T in f32
// tiles, held transposed (16 queries to a vector), in L2 at 2048 positions; an exact
// softmax down their columns; the probabilities, which the backward reads, written once,
// normalized (kept rows as attention.h says: probs_written_end); then P V, in f32 tiles or,
// with bf16_values, on bf16 pairs of keys (kernels/attention_pairs.h: train --precision
// bf16, where attention_bf16_available). Prefill, which keeps no probabilities, takes the
// online softmax of kernels/attention_runs instead: it never holds more than a block of
// scores.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace moepp {

// q: [B, T, Hq, hd]; k, v: [B, T, Hkv, hd]; out: [B, T, Hq, hd]; probs: [B, Hq, T, T].
void attention_forward_kept(const float* q, const float* k, const float* v, float* out, float* probs,
                            const AttentionShape& s, bool bf16_values);

}  // namespace moepp
