#include "kernels/gemm_small.h"

#include <algorithm>

#include "core/parallel.h"
#include "kernels/vec_math.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace moepp {

#if defined(__AVX512F__)
namespace {

inline float store_value(float acc, float alpha, float beta, float c) {
  return beta == 0.0f ? alpha * acc : alpha * acc + beta * c;
}

// NT: C[m][n] = sum_k A[m][k] B[n][k]. Tiles of 4 rows of A x 4 rows of B, vectorised
// along k (both operands contiguous there), reduced horizontally at the end. Rows past
// M or N read a valid row again and are not stored.
void nt_rows(int64_t n0, int64_t n1, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
             int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t kfull = K / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (K - kfull)) - 1u);
  for (int64_t nb = n0; nb < n1; nb += 4) {
    const float* b[4];
    for (int j = 0; j < 4; ++j) b[j] = B + std::min(nb + j, N - 1) * ldb;
    for (int64_t mb = 0; mb < M; mb += 4) {
      const float* a[4];
      for (int i = 0; i < 4; ++i) a[i] = A + std::min(mb + i, M - 1) * lda;
      __m512 acc[4][4];
      for (auto& r : acc)
        for (auto& v : r) v = _mm512_setzero_ps();
      for (int64_t k = 0; k < kfull; k += 16) {
        __m512 bv[4];
        for (int j = 0; j < 4; ++j) bv[j] = _mm512_loadu_ps(b[j] + k);
        for (int i = 0; i < 4; ++i) {
          const __m512 av = _mm512_loadu_ps(a[i] + k);
          for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
      }
      if (tail) {
        __m512 bv[4];
        for (int j = 0; j < 4; ++j) bv[j] = _mm512_maskz_loadu_ps(tail, b[j] + kfull);
        for (int i = 0; i < 4; ++i) {
          const __m512 av = _mm512_maskz_loadu_ps(tail, a[i] + kfull);
          for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
      }
      for (int i = 0; i < 4 && mb + i < M; ++i)
        for (int j = 0; j < 4 && nb + j < n1; ++j) {
          float& c = C[(mb + i) * ldc + nb + j];
          c = store_value(reduce_add(acc[i][j]), alpha, beta, c);
        }
    }
  }
}

}  // namespace

bool gemm_small_f32_takes(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K) {
  return ta == Trans::N && tb == Trans::T && M >= 1 && M <= kSmallGemmMaxRows && N >= 1 && K >= 1;
}

bool gemm_small_f32(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!gemm_small_f32_takes(ta, tb, M, N, K)) return false;
  // Split the columns of C across threads in tile-sized chunks; each thread walks its own
  // rows of B once.
  const int64_t tile = 4;
  const int64_t tiles = (N + tile - 1) / tile;
  const int64_t parts = std::min<int64_t>(tiles, int64_t(max_threads()));
  parallel_for(parts, [&](int64_t p) {
    const int64_t n0 = tiles * p / parts * tile, n1 = std::min(N, tiles * (p + 1) / parts * tile);
    if (n0 >= n1) return;
    nt_rows(n0, n1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }, 2);
  return true;
}

#else

bool gemm_small_f32_takes(Trans, Trans, int64_t, int64_t, int64_t) { return false; }

bool gemm_small_f32(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                    float, float*, int64_t) {
  return false;
}

#endif

}  // namespace moepp
