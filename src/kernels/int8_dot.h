// Products with q4 or q8_0 weights for a few rows of x (decode) in integer arithmetic:
// each row of x is first quantized to int8 in blocks of 32 columns (scale dx = amax / 127,
// values rounded to nearest even), and each output sums, block by block, dx * dw *
// (integer dot product of the int8 values and the weights' integer values). The integer
// part runs on AVX-512 VNNI (vpdpbusd: 64 multiply-adds an instruction, where widening the
// weights to f32 takes several instructions per 16 of them), in portable C++ elsewhere,
// and for q4 also on AVX-512 BW without VNNI.
//
// vpdpbusd multiplies unsigned bytes by signed ones. q4 codes are stored unsigned (q + 8);
// a q8_0 value w is made unsigned as w XOR 0x80 = w + 128. Each 4-value lane then starts
// its sum at -8 (q4) or -128 (q8_0) times the sum of its 4 x values, which takes the
// offset back out exactly. (Without VNNI, vpmaddubsw's 16-bit pair sums would saturate on
// q8_0's 255 x 127 products, so q8_0 takes this path only with VNNI:
// packed_products_use_int8.)
//
// q4 block (docs/quantization.md): 32 weights, one f16 scale dw and 16 bytes; byte i
// holds weight i in its low nibble and weight i + 16 in its high nibble, each as q + 8
// with q in [-8, 7]; the weight is dw * q. A row's blocks are contiguous (llama.cpp's
// Q4_0 nibble order). q8_0 block: 32 int8 values and one f16 scale. (The scales of a
// matrix are stored apart from its values: PackedMatrix::scales.)
#pragma once
#include <cstdint>

#include "core/aligned_vector.h"
#include "kernels/quant.h"

namespace moepp {

// Rows of x quantized for the int8 products; the caller owns it and reuses it across calls.
//
// The vector kernel takes the blocks of a row 8 at a time (a group: 256 values, the last
// group padded with zero blocks) and lays each group out as 4 vectors of 16 lanes of 4
// bytes, in the order it lays the weights out with a few shuffles (int8_lane_source): each
// lane holds values of one block in all 4 vectors, so a lane's integer sum over the 4
// vpdpbusd is exact and one conversion and one multiply-add per lane scale a whole group,
// where taking the blocks in their stored order needs both per pair of blocks.
struct Int8Rows {
  int64_t rows = 0, cols = 0;
  AlignedVector<int8_t> q;       // [rows, cols], in order
  AlignedVector<float> scales;   // [rows, cols / 32]
  // Group-major, so that at a group the rows lie side by side at fixed offsets.
  AlignedVector<int8_t> lane_q;  // [groups, rows, 4 vectors, 16 lanes, 4 values]
  // Per lane of a group: the scale of its block, and -offset * the sum of its 16 values
  // (over the 4 vectors), which turns the sum over the weights' unsigned form (q + offset)
  // into the sum over q.
  AlignedVector<float> lane_scales;  // [groups, rows, 16]
  AlignedVector<int32_t> lane_bias;  // [groups, rows, 16]
  WeightType weights = WeightType::q4;  // the lane order and the offset's kind: q4 8, q8_0 128

  int64_t groups() const { return (cols / 32 + 7) / 8; }  // ceil(cols / 256)
};

// Where lane L (0-15) of vector u (0-3) of a group takes its 4 values from: block `block`
// (0-7) of the group, values value..value + 3 of it. The weights' layout decides it: q8_0
// rows are read 64 bytes (two blocks) a vector and transposed as 4 x 4 words within each
// 128-bit quarter; q4 rows are read 64 bytes (four blocks) a vector, interleaved by 8 bytes
// and split into low and high nibbles.
struct Int8LaneSource {
  int block, value;
};
constexpr Int8LaneSource int8_lane_source(WeightType weights, int u, int L) {
  const int quarter = L / 4, at = L % 4;
  if (weights == WeightType::q8_0) return {2 * at + quarter / 2, 16 * (quarter % 2) + 4 * u};
  constexpr int nibble_start[4] = {0, 16, 8, 24};
  return {quarter + 4 * (at / 2), nibble_start[u] + 4 * (at % 2)};
}

// Quantizes x [M, K] (row stride ldx; K a multiple of 32) into out for products with
// `weights` (q4 or q8_0), each block of 32 as a q8_0 weight block (kernels/quant_blocks.h).
void quantize_rows_int8(const float* x, int64_t M, int64_t ldx, int64_t K, Int8Rows& out,
                        WeightType weights = WeightType::q4);

// y[m, j] (+)= sum over blocks b of dx[m, b] * dw[j, b] * sum_i xq[m, 32b + i] * wq[j, 32b + i]
// for m < x.rows and j in [j0, j1); W is q4 or q8_0 (x quantized for it) with W.cols ==
// x.cols; 1 <= x.rows <= 8.
void int8_linear_rows(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                      bool accumulate);
// Whether int8_linear_rows runs its vector kernel for these weights on this CPU (q4 with
// AVX-512 BW, q8_0 only with VNNI); elsewhere it runs the portable one, which for q8_0 is
// slower than widening the weights (packed_products_use_int8 decides from this).
bool int8_products_vectorised(WeightType weights);

// The same in plain C++ whatever the CPU (what int8_linear_rows runs without AVX-512): the
// tests hold both to the same arithmetic.
void int8_linear_rows_portable(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y,
                               int64_t ldy, bool accumulate);

}  // namespace moepp
