// Rows of x quantized to int8 blocks (each as encode_q8_0_block does, so exactly as
// quantize_rows_int8 quantizes them) and laid out in groups of 16 rows, 4 values of each
// row side by side: the B tiles of AMX's tdpbssd (kernels/amx_int8.h), and the vectors the
// int8 GEMM multiplies (kernels/int8_gemm.h), where one vpdpbusd adds a weight's 4
// products to each of 16 rows.
#pragma once
#include <cstdint>

#include "core/aligned_vector.h"

namespace moepp {

// For each group of 16 rows and each block of 32 columns, 8 tile rows of 64 bytes where
// byte 4m + t of tile row r is the group's row m's value 4r + t of the block. Rows past M
// are zero, as are their scales and sums. The caller owns it and reuses it across calls.
struct TileRows {
  static constexpr int64_t kGroup = 16;      // rows of x per tile
  static constexpr int64_t kTileBytes = 512;  // 8 x 64 bytes: one block of one group
  int64_t rows = 0, cols = 0;
  AlignedVector<int8_t> tiles;  // [groups, cols / 32, 8, 64]
  AlignedVector<float> scales;  // [groups, cols / 32, 16]: dx of each row's block
  AlignedVector<int32_t> sums;  // [groups, cols / 32, 16]: the sum of each row's block's values
};

// Quantizes x [M, K] (row stride ldx, K a multiple of 32) into out; many rows run on all threads.
void quantize_rows_for_tiles(const float* x, int64_t M, int64_t ldx, int64_t K, TileRows& out);

// The same for h = silu(a) * b of an FFN expert's up projection u = [a | b] ([M, 2 I], I a
// multiple of 32), without writing h: out equals quantize_rows_for_tiles of
// swiglu_forward(u) bit for bit.
void quantize_swiglu_rows_for_tiles(const float* u, int64_t M, int64_t I, TileRows& out);

}  // namespace moepp
