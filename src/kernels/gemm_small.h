// GEMMs with few rows (one expert's handful of tokens, or decode) of the form
// C = A B^T with B row-major [N, K] — a weight matrix as stored. A general GEMM packs B
// on every call, which at small M costs as much as the arithmetic; this kernel keeps the
// rows of A in cache and streams B once, unpacked, with dot products along K.
// f32 only, AVX-512 when compiled for it. bench/gemm measured where it wins (NT, M <= 32:
// 1.1-1.5x oneDNN's matmul here); an outer-product NN variant lost everywhere and was
// dropped.
#pragma once
#include <cstdint>

#include "kernels/gemm.h"

namespace moepp {

// Rows up to which these kernels beat the general provider (bench/gemm). From 16 rows
// gemm<float> prefers stream_linear (kernels/gemm_stream.h), which is faster still there.
inline constexpr int64_t kSmallGemmMaxRows = 32;

// Whether gemm_small_f32 takes this problem: NT, 1 to kSmallGemmMaxRows rows, N and K
// positive, built with AVX-512.
bool gemm_small_f32_takes(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K);

// C = alpha * A B^T + beta * C with A [M, K] and B [N, K] (ta = N, tb = T). Returns false
// for any other case (then the caller uses the general provider).
bool gemm_small_f32(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace moepp
