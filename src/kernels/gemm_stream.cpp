#include "kernels/gemm_stream.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/aligned_vector.h"
#include "core/cpu_caches.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/vec_math.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace moepp {

namespace {

constexpr int64_t kBlockRows = 64;  // rows of x per register tile: four 16-float vectors
// The transposed copy of x, padded to whole vectors, must leave room in L2 for the weight
// rows streaming past it. On a 2 MB L2 (bench/gemm) the down projection, K = 4096, still
// gains at 64 rows = 1 MB; deeper products go to the general GEMM. Where that copy exceeds
// half the L2 (a 1 MB L2: AMD Zen 5), K is split into passes whose copies fit, each pass
// adding into y.
constexpr int64_t kMaxCopyBytes = int64_t(1) << 20;
// Rows of x for which stream_linear beats oneDNN and gemm_small (bench/gemm, 16 weights
// streamed: below 16 the dot products of gemm_small lead, at 128 oneDNN is level).
constexpr int64_t kMinRows = 16, kMaxRows = 96;

// Rows of x past the last multiple of 16 that take dot products; more than this many fill
// a zero-padded vector instead (bench/gemm at 40-63 rows: a threshold of 4 beat 8 and 15
// by up to 20%; dot products run below the broadcast kernel's rate).
constexpr int64_t kMaxDotRows = 4;

// Rows of x that go into vectors (the last one possibly padded); the rest, dot products.
int64_t vector_rows(int64_t M) { return M % 16 > kMaxDotRows ? (M + 15) / 16 * 16 : M / 16 * 16; }

#if defined(__AVX512F__)

// out[r][16 z + i] = sum_k W[row r][k] xt[k][16 z + i] for R rows of W (rows[r]) and Z
// vectors of x: R x Z accumulators, each W element broadcast once. The next tile's rows
// (next[r], or none) are pulled into L2 a line per row every 16 steps, one tile ahead.
template <int Z, int R>
void stream_tile(const float* const* rows, const float* const* next, const float* xt, int64_t K, float* out) {
  const float* w[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) w[r] = rows[r];
  __m512 acc[R][Z];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k, xt += 16 * Z) {
    if (next != nullptr && (k & 15) == 0) {
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) _mm_prefetch(reinterpret_cast<const char*>(next[r] + k), _MM_HINT_T1);
    }
    __m512 xv[Z];
#pragma GCC unroll 4
    for (int z = 0; z < Z; ++z) xv[z] = _mm512_loadu_ps(xt + 16 * z);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(w[r][k]);
#pragma GCC unroll 4
      for (int z = 0; z < Z; ++z) acc[r][z] = _mm512_fmadd_ps(b, xv[z], acc[r][z]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int z = 0; z < Z; ++z) _mm512_storeu_ps(out + r * 16 * Z + 16 * z, acc[r][z]);
}

// out[t * R + r] = sum_k x[t][k] W[row r][k] for T rows of x left over past the last whole
// vector (M % 16 of them): dot products along K, which cost T / 16 of a broadcast vector's
// work where padding them to a vector would cost all of it.
template <int T, int R>
void dot_tile(const float* const* x, const float* const* rows, int64_t K, float* out) {
  __m512 acc[T][R];
#pragma GCC unroll 3
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[t][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1u);
    __m512 xv[T];
#pragma GCC unroll 3
    for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(mask, x[t] + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 w = _mm512_maskz_loadu_ps(mask, rows[r] + k);
#pragma GCC unroll 3
      for (int t = 0; t < T; ++t) acc[t][r] = _mm512_fmadd_ps(xv[t], w, acc[t][r]);
    }
  }
#pragma GCC unroll 3
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) out[t * R + r] = reduce_add(acc[t][r]);
}

using DotTileFn = void (*)(const float* const*, const float* const*, int64_t, float*);

template <int R>
DotTileFn dot_tile_for(int64_t rows) {
  switch (rows) {
    case 1: return &dot_tile<1, R>;
    case 2: return &dot_tile<2, R>;
    default: return &dot_tile<3, R>;
  }
}

using StreamTileFn = void (*)(const float* const*, const float* const*, const float*, int64_t, float*);

template <int R>
StreamTileFn tile_for(int64_t vectors) {
  switch (vectors) {
    case 1: return &stream_tile<1, R>;
    case 2: return &stream_tile<2, R>;
    case 3: return &stream_tile<3, R>;
    default: return &stream_tile<4, R>;
  }
}

#endif

}  // namespace

bool stream_linear_suits(int64_t M, int64_t K) {
#if defined(__AVX512F__)
  constexpr bool kHaveKernel = true;
#else
  constexpr bool kHaveKernel = false;  // the plain loop below is for correctness only
#endif
  return kHaveKernel && M >= kMinRows && M <= kMaxRows &&
         vector_rows(M) * K * int64_t(sizeof(float)) <= kMaxCopyBytes;
}

namespace {

// One pass of stream_linear over the K it is given (the caller sizes passes so that the
// transposed copy of x fits its share of the L2).
void stream_pass(const float* x, int64_t M, int64_t ldx, const float* W, int64_t N, int64_t K, int64_t ldw,
                 float* y, int64_t ldy, bool accumulate) {
#if defined(__AVX512F__)
  // Blocks of up to 64 rows of x, each copied as [K][16 z] (z = its vectors, zero padded),
  // and the rows past the last whole vector, read in place by dot products.
  const int64_t vrows = vector_rows(M), tail0 = std::min(M, vrows);
  // Tiles of R rows of W: 6 beside four vectors of x (24 accumulators), else 8 (enough
  // accumulators to hide the FMA latency).
  const int64_t R = vrows >= 4 * 16 ? 6 : 8;
  struct Block {
    int64_t m0, rows, vectors;
    float* xt;
    StreamTileFn tile;
  };
  std::vector<Block> blocks;
  // Kept across calls: a fresh buffer this size would be page-faulted on every product.
  // Its storage starts on a cache line, and so does every block (16 rows of K each).
  thread_local AlignedVector<float> copy;
  copy.resize(std::max(copy.size(), size_t(vrows * K)));
  float* base = copy.data();
  for (int64_t m0 = 0; m0 < vrows; m0 += kBlockRows) {
    const int64_t vectors = (std::min(kBlockRows, vrows - m0) + 15) / 16;
    blocks.push_back({m0, std::min(M - m0, 16 * vectors), vectors, base,
                      R == 8 ? tile_for<8>(vectors) : tile_for<6>(vectors)});
    base += vectors * 16 * K;
  }
  const int64_t tiles = (N + R - 1) / R;
  const int threads = omp_in_parallel() ? 1 : int(std::min<int64_t>(max_threads(), tiles));
  constexpr int64_t kPackStep = 64;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t k0 = 0; k0 < K; k0 += kPackStep) {
      const int64_t k1 = std::min(K, k0 + kPackStep);
      for (const Block& b : blocks) {
        const int64_t width = 16 * b.vectors;
        for (int64_t i = 0; i < width; ++i) {
          if (i < b.rows) {
            const float* src = x + (b.m0 + i) * ldx;
            for (int64_t k = k0; k < k1; ++k) b.xt[k * width + i] = src[k];
          } else {
            for (int64_t k = k0; k < k1; ++k) b.xt[k * width + i] = 0.0f;
          }
        }
      }
    }
    alignas(64) float out[8 * kBlockRows];
    // Chunks of consecutive tiles, first come first served: within a chunk each tile
    // prefetches the next one's rows.
#pragma omp for schedule(dynamic, 1)
    for (int64_t c0 = 0; c0 < tiles; c0 += 8) {
      const int64_t c1 = std::min(tiles, c0 + 8);
      for (int64_t t = c0; t < c1; ++t) {
        const int64_t n0 = t * R, valid = std::min(R, N - n0);
        const float* rows[8];
        const float* next[8];
        for (int64_t r = 0; r < R; ++r) {
          rows[r] = W + std::min(n0 + r, N - 1) * ldw;  // past N: a real row, computed and dropped
          next[r] = W + std::min(n0 + R + r, N - 1) * ldw;
        }
        for (const Block& b : blocks) {
          // The first block's pass pulls in the next tile; later passes find this tile's rows in L2.
          b.tile(rows, &b == &blocks[0] && t + 1 < c1 ? next : nullptr, b.xt, K, out);
          const int64_t width = 16 * b.vectors;
          for (int64_t i = 0; i < b.rows; ++i) {
            float* yr = y + (b.m0 + i) * ldy + n0;
            for (int64_t r = 0; r < valid; ++r) yr[r] = accumulate ? yr[r] + out[r * width + i] : out[r * width + i];
          }
        }
        for (int64_t m0 = tail0; m0 < M; m0 += 3) {
          const int64_t n = std::min<int64_t>(3, M - m0);
          const float* xr[3];
          for (int64_t i = 0; i < n; ++i) xr[i] = x + (m0 + i) * ldx;
          (R == 8 ? dot_tile_for<8>(n) : dot_tile_for<6>(n))(xr, rows, K, out);
          for (int64_t i = 0; i < n; ++i) {
            float* yr = y + (m0 + i) * ldy + n0;
            for (int64_t r = 0; r < valid; ++r) yr[r] = accumulate ? yr[r] + out[i * R + r] : out[i * R + r];
          }
        }
      }
    }
  }
#else
  parallel_for(M, [&](int64_t m) {
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += x[m * ldx + k] * W[n * ldw + k];
      y[m * ldy + n] = accumulate ? y[m * ldy + n] + acc : acc;
    }
  });
#endif
}

}  // namespace

void stream_linear(const float* x, int64_t M, int64_t ldx, const float* W, int64_t N, int64_t K, int64_t ldw,
                   float* y, int64_t ldy, bool accumulate, int64_t max_copy_bytes) {
  if (M == 0 || N == 0) return;
  MOEPP_CHECK(M > 0 && N > 0 && K > 0 && ldx >= K && ldw >= K && ldy >= N, "stream_linear: M ", M, ", N ", N,
              ", K ", K, ", strides ", ldx, ", ", ldw, ", ", ldy, " do not fit");
  // Passes over K whose copies of x fit max_copy_bytes, in multiples of 16 of K.
  const int64_t limit = max_copy_bytes > 0 ? max_copy_bytes : l2_cache().bytes / 2;
  const int64_t copy_bytes = vector_rows(M) * K * int64_t(sizeof(float));
  const int64_t passes = std::max<int64_t>(1, (copy_bytes + limit - 1) / limit);
  const int64_t kc = ((K + passes - 1) / passes + 15) / 16 * 16;
  for (int64_t k0 = 0; k0 < K; k0 += kc)
    stream_pass(x + k0, M, ldx, W + k0, N, std::min(kc, K - k0), ldw, y, ldy, accumulate || k0 > 0);
}

}  // namespace moepp
