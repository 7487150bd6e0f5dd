// Causal attention for a run of consecutive query rows of one sequence (a prompt chunk in
// prefill) against that sequence's history, in tiles: the rows' queries against a block of
// 128 keys is one small GEMM, the softmax is taken online (a running maximum and sum per
// query, earlier sums rescaled when the maximum grows), and the probabilities times the
// block's values is another. Each key and value row is read once per block of query rows,
// where attending row by row reads it once per row, with a horizontal sum per key.
//
// attention_rows_forward (kernels/attention.h) sends rows here when they form such runs and
// no probabilities are kept; the result equals the row-by-row softmax up to f32 summation
// order.
#pragma once
#include <cstdint>

namespace moepp {

// Query rows at most this many per call (times G query heads: the rows of one tile).
constexpr int64_t kRunBlockQueries = 64;

// Rows i < rows (row i at q + i * row_stride, its G heads hd apart) attend positions
// 0 .. first_context + i - 1 of one kv head's history (key j at k + j * kv_stride, value j
// at v + j * kv_stride); out has q's layout. rows * G <= kRunBlockQueries. KV is T, or
// uint16_t bf16 bits for T = float.
template <typename T, typename KV>
void attend_run(const T* q, int64_t row_stride, int64_t rows, int64_t G, int64_t hd, const KV* k, const KV* v,
                int64_t kv_stride, int64_t first_context, T scale, T* out);

}  // namespace moepp
