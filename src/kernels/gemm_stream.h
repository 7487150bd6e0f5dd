// y = x W^T for a weight W [N, K] as stored (nn.Linear layout), read in place: the
// training forward of an expert that receives a few dozen tokens.
//
// The panel kernel wants W's columns contiguous, which for this product means copying W;
// oneDNN copies it on every call, and for ~50 rows that copy costs about a third of the
// arithmetic. Here the roles turn round: x (a few dozen rows, small) is transposed into a
// copy [K][rows] that stays in L2, and W (tens of MB) streams from memory once, row after
// row, each element broadcast against up to 64 rows of x held in four vectors. A register
// tile is 6-8 rows of W by up to 64 rows of x (up to 24 accumulators), run over all of K,
// and its outputs are written transposed into y. Up to 4 rows of x past the last multiple
// of 16 would waste most of a vector; they take dot products along K with the same rows of
// W instead (52 rows: 48 broadcast, 4 by dot products; 270 GFLOP/s against oneDNN's 220).
// More of them fill a zero-padded vector.
//
// Threads split W's rows. f32 in, f32 out, f32 accumulation. AVX-512; without it a plain
// loop (correct, slow), and stream_linear_suits says no.
#pragma once
#include <cstdint>

namespace moepp {

// y[m, n] (+)= sum_k x[m, k] W[n, k] for m < M, n < N; x [M, K] (row stride ldx), W [N, K]
// (row stride ldw), y [M, N] (row stride ldy). accumulate = false overwrites y.
// K is split into passes whose transposed copies of x take at most max_copy_bytes each
// (0: half this machine's L2); later passes add into y. Tests set it small to cover
// several passes on any machine.
void stream_linear(const float* x, int64_t M, int64_t ldx, const float* W, int64_t N, int64_t K, int64_t ldw,
                   float* y, int64_t ldy, bool accumulate = false, int64_t max_copy_bytes = 0);

// Whether stream_linear beats the general GEMM and the few-row kernel for M rows of
// depth K (bench/gemm: 16 to 96 rows), with the transposed copy of x small enough to stay
// in L2 beside the weight rows being read.
bool stream_linear_suits(int64_t M, int64_t K);

}  // namespace moepp
