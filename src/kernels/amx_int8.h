// Products of q8_0 or q4 weights with rows of x quantized to int8 blocks, on AMX tiles
// (Intel's matrix unit, Sapphire Rapids and later): the integer arithmetic of
// kernels/int8_dot.h - each row of x is quantized in blocks of 32 columns exactly as a q8_0
// weight block, and y[m, j] sums, block by block, dx * dw * (integer dot product) - for any
// number of rows.
//
// One tile multiply (tdpbssd) takes 16 weight rows x one block (the A tile, read straight
// from the row-major weights with the row stride) against one block of 16 rows of x (the B
// tile, which quantize_rows_for_tiles lays out for it): 8192 multiply-adds into 16 x 16
// int32 sums. Each block has its own scales, so the sums are stored and scaled into f32
// accumulators block by block (3 vector instructions per weight row); that, not the tile
// multiply, sets the speed, at about 6x fewer instructions than vpdpbusd's per product.
//
// q4 weights are widened to int8 (q in [-8, 7]) a band of 16 rows at a time first; rows of
// a last, partial band are copied into a zero-padded band.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/int8_tiles.h"
#include "kernels/quant.h"

namespace moepp {

// Whether the AMX kernel can run: built for a CPU with AMX-INT8 and the kernel granted this
// process the tile state (asked once, on the first call).
bool amx_int8_available();

// y[m, j] (+)= sum over blocks b of dx[m, b] * dw[j, b] * sum_i xq[m, 32b + i] * wq[j, 32b + i]
// for m < x.rows and j in [j0, j1); W is q8_0 or q4 with W.cols == x.cols. Only where
// amx_int8_available(); callable from any thread (each configures its own tiles).
void amx_int8_linear(const TileRows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                     bool accumulate);

}  // namespace moepp
