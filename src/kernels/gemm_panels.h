// A weight matrix packed once into column panels, for repeated products y = x W^T on
// fixed weights (inference, and forward passes timed on fixed weights).
//
// A general GEMM repacks its weight operand on every call; for an expert that receives
// ~50 rows, copying its 50 MB up-projection costs about as much as the arithmetic. A
// PanelMatrix does that copy once: W [N, K] (nn.Linear layout) becomes ceil(N / 32)
// panels, panel p holding W[32p + j, k] at [p][k][j], zero padded past N. panel_linear
// then reads each panel once per block of K and multiplies it against every row of x with
// an outer-product register kernel (up to 14 rows x 32 columns of accumulators, x
// broadcast from a small packed copy), so the weights stream from memory once per call
// whatever the row count. Threads split the panels. f32 in, f32 out, f32 accumulation.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace moepp {

inline constexpr int64_t kPanelWidth = 32;

struct PanelMatrix {
  int64_t rows = 0, cols = 0;  // W's shape [N, K]
  Tensor<float> panels;        // [ceil(N / 32), K, 32]

  static PanelMatrix pack(const float* w, int64_t rows, int64_t cols);
  int64_t num_panels() const { return (rows + kPanelWidth - 1) / kPanelWidth; }
  // Writes rows [r0, r0 + n) of W into out [n, cols].
  void unpack_rows(int64_t r0, int64_t n, float* out) const;
  size_t bytes() const { return size_t(panels.numel()) * sizeof(float); }
};

// y[m, j] (+)= sum_k x[m, k] W[j, k] for m < M, j < W.rows; x [M, W.cols] with row
// stride ldx, y [M, W.rows] with row stride ldy. accumulate = false overwrites y.
void panel_linear(const float* x, int64_t M, int64_t ldx, const PanelMatrix& W, float* y, int64_t ldy,
                  bool accumulate = false);

// y (+)= x B with B row-major [K, N] (row stride ldb), read in place: its columns already
// form panels (32 consecutive floats per row), so no packing is needed. This is the form
// of the backward's products with a weight as stored (dX = dU W). Same kernel and
// threading as panel_linear.
void panel_matmul(const float* x, int64_t M, int64_t ldx, const float* B, int64_t K, int64_t N, int64_t ldb,
                  float* y, int64_t ldy, bool accumulate = false);

// The order in which panel_matmul_tn walks its output when B is one K block deep:
// row_tiles (each row tile across all panels, so the output streams row after row; B stays
// in L2) or panel_groups (as the other products: groups of panels, every row tile in each).
// automatic takes row_tiles where B fits half of an L2 of 2 MB or more (gemm_panels.cpp
// says what was measured). Tests name a walk to cover both on any machine.
enum class OutputWalk { automatic, row_tiles, panel_groups };

// y[M, N] (+)= A^T B with A stored [K, M] (row stride lda) and B row-major [K, N] read in
// place: the weight gradients dW += dY^T X of an expert, whose reduction runs over its
// K tokens. The output rows go through the same register tiles (A's columns packed), so
// each gradient tile is read and written once per call. Threads take bands of output rows.
// With accumulate = false and K within one pass (up to 128 tokens, 256 where B's slices
// are copied), y is written with non-temporal stores and never read: a gradient is not
// used again until the optimizer's step.
void panel_matmul_tn(const float* a, int64_t lda, int64_t M, const float* B, int64_t K, int64_t N, int64_t ldb,
                     float* y, int64_t ldy, bool accumulate = false, OutputWalk walk = OutputWalk::automatic);
// Whether panel_matmul_tn beats the general GEMM at this depth K (an expert's tokens; up
// to 1024, bench/gemm; gemm_panels.cpp says where that was measured).
bool panel_matmul_tn_suits(int64_t K);

// Whether panel_matmul reads a B with this row stride in place: a panel slice (128 rows of
// two 64-byte lines, ldb floats apart) must spread over enough cache sets to stay in the
// L2 (core/cpu_caches.h). Strides of 8 KB multiples pile the rows onto a few sets and thrash
// (bench/gemm: 1-160 GFLOP/s at a 16 KB stride with 512-row slices); for those
// panel_matmul copies each slice (256 rows deep) before using it, and gemm_grouped takes
// that path up to 128 rows, oneDNN beyond.
bool panel_matmul_suits(int64_t ldb);

}  // namespace moepp
