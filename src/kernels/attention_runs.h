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
#include <algorithm>
#include <cstdint>

namespace moepp {

// Query rows at most this many per call (times G query heads: the rows of one tile).
constexpr int64_t kRunBlockQueries = 64;

// Where a run also writes its probabilities (training keeps them for the backward): query
// head g of run row i gets row[i] + g * head_stride, a row `length` long (see
// probs_written_end).
template <typename T>
struct RunProbs {
  T* const* row = nullptr;
  int64_t head_stride = 0, length = 0;
};

// A row of kept probabilities that sees `seen` positions is written at least up to here:
// zero past `seen` to the end of its block of 16 (a tile of the backward reads its 16
// queries' rows as far as its last one sees). Beyond, no backward reads, and the forward
// writes no more than the zeros of the row's run (its rows as far as the last one sees):
// writing the whole upper triangle's zeros took ~12% of a 2048-position training forward.
inline int64_t probs_written_end(int64_t seen, int64_t length) {
  return std::max(seen, std::min(length, (seen + 15) / 16 * 16));
}

// Whether attend_run can write probabilities for T (the AVX-512 f32 runs can).
template <typename T>
bool attend_run_keeps_probs();

// Rows i < rows (row i at q + i * row_stride, its G heads hd apart) attend positions
// 0 .. first_context + i - 1 of one kv head's history (key j at k + j * kv_stride, value j
// at v + j * kv_stride); out has q's layout. rows * G <= kRunBlockQueries. KV is T, or
// uint16_t bf16 bits for T = float. probs: see RunProbs (only where attend_run_keeps_probs).
template <typename T, typename KV>
void attend_run(const T* q, int64_t row_stride, int64_t rows, int64_t G, int64_t hd, const KV* k, const KV* v,
                int64_t kv_stride, int64_t first_context, T scale, T* out, const RunProbs<T>& probs = {});

}  // namespace moepp
