#include "kernels/int8_tiles.h"

#include <algorithm>
#include <array>
#include <utility>
#include <cstring>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"
#include "kernels/swiglu.h"
#include "kernels/vec_math.h"

#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#define MOEPP_TILES_VECTORIZED 1
#include <immintrin.h>
#else
#define MOEPP_TILES_VECTORIZED 0
#endif

namespace moepp {

namespace {

// out's buffers sized for M rows of K columns.
void shape_tiles(int64_t M, int64_t K, TileRows& out) {
  const int64_t blocks = K / kQ8Block, groups = (M + TileRows::kGroup - 1) / TileRows::kGroup;
  out.rows = M;
  out.cols = K;
  out.tiles.resize(size_t(groups * blocks * TileRows::kTileBytes));
  out.scales.resize(size_t(groups * blocks * TileRows::kGroup));
  out.sums.resize(size_t(groups * blocks * TileRows::kGroup));
}

// A prompt's rows are worth both threads; a decode step's few are not worth waking them.
bool worth_both_threads(int64_t M, int64_t K) { return M * K >= (int64_t(1) << 16); }

#if MOEPP_TILES_VECTORIZED
constexpr __mmask16 kAll = 0xFFFF;

// The lane indices of _mm512_permutex2var_epi32 that exchange lane bit Q with a vector bit:
// the first output keeps the lanes whose bit Q is 0 and takes the second input's such lanes
// into the lanes whose bit is 1; the second output the other way round.
template <int Q, bool Second>
constexpr std::array<int32_t, 16> exchange_lanes() {
  std::array<int32_t, 16> idx{};
  for (int l = 0; l < 16; ++l) {
    if (!Second) idx[size_t(l)] = (l & (1 << Q)) == 0 ? l : 16 + (l & ~(1 << Q));
    else idx[size_t(l)] = (l & (1 << Q)) == 0 ? (l | (1 << Q)) : 16 + l;
  }
  return idx;
}

// Exchanges bit P of the vector index with bit Q of the lane index over 8 vectors of 16
// dwords (a butterfly stage of a transpose).
template <int P, int Q>
void exchange_bits(__m512i (&z)[8]) {
  alignas(64) static constexpr std::array<int32_t, 16> first = exchange_lanes<Q, false>();
  alignas(64) static constexpr std::array<int32_t, 16> second = exchange_lanes<Q, true>();
  const __m512i lo = _mm512_load_si512(first.data()), hi = _mm512_load_si512(second.data());
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    if (j & (1 << P)) continue;
    const __m512i a = z[j], c = z[j | (1 << P)];
    z[j] = _mm512_permutex2var_epi32(a, lo, c);
    z[j | (1 << P)] = _mm512_permutex2var_epi32(a, hi, c);
  }
}

// One group's block: rows [0, rows) of x (row stride ldx, 32 values from x) quantized each
// exactly as encode_q8_0_block quantizes a block (so as quantize_rows_int8 does: a row's
// products do not depend on which kernel, or batch, it went through), rows past `rows`
// zero. Writes the tile (8 x 64 bytes), the 16 scales and the 16 block sums. Each row's
// 32 codes are 8 dwords; the tile is their 16 x 8 transpose, done in registers.
void quantize_group_block(const float* x, int64_t ldx, int64_t rows, int8_t* tile, float* scales, int32_t* sums) {
  alignas(64) float amax[16] = {};
  for (int64_t m = 0; m < rows; ++m) {
    const float* r = x + m * ldx;
    amax[m] = reduce_max(_mm512_maskz_max_ps(kAll, _mm512_abs_ps(_mm512_loadu_ps(r)), _mm512_abs_ps(_mm512_loadu_ps(r + 16))));
  }
  const __m512 d = _mm512_div_ps(_mm512_load_ps(amax), _mm512_set1_ps(127.0f));
  alignas(64) float inv[16];
  _mm512_store_ps(inv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GT_OQ),
                                           _mm512_set1_ps(1.0f), d));
  _mm512_storeu_ps(scales, d);
  // z[j] holds rows j (low half) and j + 8 (high half): vector bits m2 m1 m0, lane bits m3 c2 c1 c0.
  __m512i z[8];
  const auto codes = [&](int64_t m) {
    if (m >= rows) return _mm256_setzero_si256();
    const float* r = x + m * ldx;
    const __m512 s = _mm512_set1_ps(inv[m]);
    const __m128i lo = _mm512_maskz_cvtsepi32_epi8(kAll, _mm512_maskz_cvtps_epi32(kAll, _mm512_mul_ps(_mm512_loadu_ps(r), s)));
    const __m128i hi =
        _mm512_maskz_cvtsepi32_epi8(kAll, _mm512_maskz_cvtps_epi32(kAll, _mm512_mul_ps(_mm512_loadu_ps(r + 16), s)));
    return _mm256_inserti128_si256(_mm256_zextsi128_si256(lo), hi, 1);
  };
  for (int j = 0; j < 8; ++j) {
    const __m512i low = _mm512_maskz_inserti64x4(0xFF, _mm512_setzero_si512(), codes(j), 0);
    z[j] = _mm512_maskz_inserti64x4(0xFF, low, codes(j + 8), 1);
  }
  // Swapping vector bit k with lane bit k for k = 2, 1, 0 leaves vector c2 c1 c0, lane m3 m2 m1 m0.
  exchange_bits<2, 2>(z);
  exchange_bits<1, 1>(z);
  exchange_bits<0, 0>(z);
  __m512i total = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi8(1);
  for (int c = 0; c < 8; ++c) {
    _mm512_storeu_si512(tile + 64 * c, z[c]);
    total = _mm512_dpbusd_epi32(total, ones, z[c]);  // each row's 4 codes of tile row c
  }
  _mm512_storeu_si512(sums, total);
}

// quantize_group_block on every (group, block) tile of out, shaped for M rows of K; a
// prompt's rows on all threads. block_rows(g, b, scratch) gives the tile's source rows and
// their stride: rows of x in place, or the rows it computes into scratch (room for one
// group's block, 16 x 32).
template <typename BlockRows>
void quantize_tiles(int64_t M, int64_t K, TileRows& out, BlockRows&& block_rows) {
  constexpr int64_t G = TileRows::kGroup;
  shape_tiles(M, K, out);
  const int64_t blocks = K / kQ8Block, tiles = (M + G - 1) / G * blocks;
  parallel_for(
      tiles,
      [&](int64_t tile) {
        const int64_t g = tile / blocks, b = tile % blocks;
        alignas(64) float scratch[G * kQ8Block];
        const auto [rows, ld] = block_rows(g, b, scratch);
        quantize_group_block(rows, ld, std::min(G, M - g * G), out.tiles.data() + tile * TileRows::kTileBytes,
                             out.scales.data() + tile * G, out.sums.data() + tile * G);
      },
      worth_both_threads(M, K) ? 2 : tiles + 1);
}
#endif

}  // namespace

void quantize_rows_for_tiles(const float* x, int64_t M, int64_t ldx, int64_t K, TileRows& out) {
  MOEPP_CHECK(K % kQ8Block == 0, "quantize_rows_for_tiles: ", K, " columns, not a multiple of ", kQ8Block);
  constexpr int64_t G = TileRows::kGroup;
#if MOEPP_TILES_VECTORIZED
  quantize_tiles(M, K, out, [&](int64_t g, int64_t b, float*) { return std::pair(x + g * G * ldx + b * kQ8Block, ldx); });
#else
  const int64_t blocks = K / kQ8Block, groups = (M + G - 1) / G;
  shape_tiles(M, K, out);
  if (M % G) {  // rows past M in the last group are zeros; every other byte is written below
    std::fill(out.tiles.begin() + (groups - 1) * blocks * TileRows::kTileBytes, out.tiles.end(), int8_t(0));
    std::fill(out.scales.begin() + (groups - 1) * blocks * G, out.scales.end(), 0.0f);
    std::fill(out.sums.begin() + (groups - 1) * blocks * G, out.sums.end(), 0);
  }
  parallel_for(
      M,
      [&](int64_t m) {
        const int64_t g = m / G, lane = m % G;
        int8_t q[kQ8Block];
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t tile = g * blocks + b;
          // Quantized exactly as quantize_rows_int8 quantizes a row: a row's products do
          // not depend on which kernel, or which batch, it went through.
          out.scales[size_t(tile * G + lane)] = encode_q8_0_block(x + m * ldx + b * kQ8Block, q);
          int32_t sum = 0;
          for (int i = 0; i < kQ8Block; ++i) sum += q[i];
          out.sums[size_t(tile * G + lane)] = sum;
          int8_t* t = out.tiles.data() + tile * TileRows::kTileBytes + 4 * lane;
          for (int r = 0; r < 8; ++r) std::memcpy(t + 64 * r, q + 4 * r, 4);
        }
      },
      worth_both_threads(M, K) ? 2 : M + 1);
#endif
}

void quantize_swiglu_rows_for_tiles(const float* u, int64_t M, int64_t I, TileRows& out) {
  MOEPP_CHECK(I % kQ8Block == 0, "quantize_swiglu_rows_for_tiles: ", I, " columns, not a multiple of ", kQ8Block);
#if MOEPP_TILES_VECTORIZED
  constexpr int64_t G = TileRows::kGroup;
  quantize_tiles(M, I, out, [&](int64_t g, int64_t b, float* h) {
    // The group's h block, computed once and quantized from L1.
    for (int64_t m = 0; m < std::min(G, M - g * G); ++m) {
      const float* a = u + (g * G + m) * 2 * I + b * kQ8Block;
      for (int half = 0; half < 2; ++half)
        _mm512_store_ps(h + m * kQ8Block + 16 * half,
                        swiglu16(_mm512_loadu_ps(a + 16 * half), _mm512_loadu_ps(a + I + 16 * half)));
    }
    return std::pair<const float*, int64_t>(h, kQ8Block);
  });
#else
  thread_local AlignedVector<float> h;
  h.resize(size_t(M * I));
  swiglu_forward(u, h.data(), M, I);
  quantize_rows_for_tiles(h.data(), M, I, I, out);
#endif
}

}  // namespace moepp
