// One query row's attention for the G query heads of one kv head (decode: a new token
// against its sequence's KV cache), written for AVX-512 with the head dimension fixed at
// compile time. kernels/attention.cpp sends its row-by-row tasks here where this kernel
// takes the shape (group_attention_vectorised) and keeps its portable loop for the rest.
//
// Why a kernel of its own: the portable loop reduces each q . k to a scalar on its own
// (a dependency chain of FMAs, then a horizontal sum) and adds every p v to the output in
// memory, so decode attention ran at a third of the rate the cache delivers the keys and
// values. Here 16 keys' partial sums are reduced together (a transpose-and-add tree), and
// the outputs of up to 16 / (head_dim / 16) heads stay in registers over all values.
#pragma once
#include <cstdint>

namespace moepp {

// Asks for the cache lines of one key or value row (`bytes` long) ahead of its use: a kv
// head's rows lie kv_heads * head_dim apart (a page at Mixtral's shape), a stride the
// hardware prefetcher does not follow. (Shared with kernels/attention.cpp's portable loop.)
inline void prefetch_row(const void* row, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(row) + b);
}

// Whether attend_group_vectorised takes this head dimension (64, 96, 128 or 256 on a build
// with AVX-512).
bool group_attention_vectorised(int64_t head_dim);

// For g < G: score[g][j] = q_g . k_j * scale for j < L, softmax over j in place (score[g]
// keeps the probabilities), out_g = sum_j p[g][j] v_j. q: G rows of hd; out: G rows of hd;
// key j at k + j * stride, value j at v + j * stride, stored as f32 or as bf16 bits.
void attend_group_vectorised(const float* q, int64_t G, int64_t hd, const float* k, const float* v, int64_t stride,
                             int64_t L, float scale, float* const* score, float* out);
void attend_group_vectorised(const float* q, int64_t G, int64_t hd, const uint16_t* k, const uint16_t* v,
                             int64_t stride, int64_t L, float scale, float* const* score, float* out);

}  // namespace moepp
