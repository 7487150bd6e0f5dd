// A weight matrix as the decoder reads it, whatever holds it: MatrixView<T> points either
// at a dense row-major [rows, cols] array of T (training parameters, the f64 verification
// path) or at a PackedMatrix (f32 panels, bf16 or q8_0: inference). The view owns
// nothing; the ModelParams or PackedModel it was taken from must outlive it.
//
// linear() is the one product every projection of the decoder goes through, y (+)= x W^T:
// the BLAS-provider GEMM for dense views, packed_linear for packed ones (T = float only).
#pragma once
#include <cstdint>

#include "kernels/quant.h"

namespace moepp {

template <typename T>
struct MatrixView {
  const T* dense = nullptr;             // [rows, cols] row-major, or null
  const PackedMatrix* packed = nullptr;  // or the packed matrix
  int64_t rows = 0, cols = 0;

  static MatrixView of_dense(const T* w, int64_t rows, int64_t cols) { return {w, nullptr, rows, cols}; }
  static MatrixView of_packed(const PackedMatrix& p) { return {nullptr, &p, p.rows, p.cols}; }
  bool empty() const { return !dense && !packed; }
};

// y[m, j] (+)= sum_k x[m, k] W[j, k] for m < M, j < W.rows; x has row stride ldx, y ldy.
template <typename T>
void linear(const MatrixView<T>& W, const T* x, int64_t M, int64_t ldx, T* y, int64_t ldy, bool accumulate = false);

// out[i, :] = W[ids[i], :] (an embedding lookup) for i < n; every id is checked against W.rows.
template <typename T>
void gather_rows(const MatrixView<T>& W, const int32_t* ids, int64_t n, T* out);

}  // namespace moepp
