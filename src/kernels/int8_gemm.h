// Products of q8_0 or q4 weights with many rows of x on AVX-512 VNNI, for CPUs without
// AMX-INT8: the integer arithmetic of kernels/int8_dot.h (x quantized in blocks of 32 as
// quantize_rows_int8 does; y[m, j] sums, block by block, dx * dw * the integer dot product)
// at GEMM speed, where rounding the weights to bf16 for the bf16 GEMM did half as many
// multiply-adds an instruction (vdpbf16ps: 32, vpdpbusd: 64).
//
// vpdpbusd adds to each of 16 lanes the 4 products of 4 unsigned bytes and 4 signed ones.
// Here a lane is one row of x, as TileRows lays them out (16 rows x 4 values a vector), and
// the 4 values of one weight row, in their unsigned form (q4 codes q + 8, q8_0 w + 128),
// are broadcast to all lanes: one instruction adds 4 products to 16 outputs of one weight
// row. Each thread takes an equal share of W's rows (in whole tiles) and widens a band of
// 60 of them at a time to unsigned bytes, row after row, with their scales as f32, in a
// scratch that stays in its L2. A register tile of 32 rows of x by up to 6 weight rows
// keeps a block's int32 sums, started at -offset * the sum of the block's x values (which
// takes the unsigned form's offset back out exactly), and the f32 sums over blocks, into
// which each block's sums go times dx * dw. The tiles of a band leave their outputs as
// columns (lanes: rows of x) in a buffer, and the band's 16 x 16 blocks are transposed in
// registers and written to y a row's run of 16 at a time.
#pragma once
#include <cstdint>

#include "kernels/int8_tiles.h"
#include "kernels/quant.h"

namespace moepp {

// Whether int8_gemm runs here: built for AVX-512 with VNNI.
bool int8_gemm_available();

// y[m, j] (+)= sum over blocks b of dx[m, b] * dw[j, b] * sum_i xq[m, 32b + i] * wq[j, 32b + i]
// for every row m of x and every row j of W (q8_0 or q4 with W.cols == x.cols), on all
// threads. Each output's blocks are summed in order, whatever the number of rows.
void int8_gemm(const TileRows& x, const PackedMatrix& W, float* y, int64_t ldy, bool accumulate);

}  // namespace moepp
