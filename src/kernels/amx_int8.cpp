#include "kernels/amx_int8.h"

#include <algorithm>
#include <cstring>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/amx_tiles.h"
#include "kernels/q4_nibbles.h"
#include "kernels/quant_blocks.h"
#include "kernels/row_blocks.h"

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && defined(__AVX512BW__)
#define MOEPP_AMX_INT8 1
#include <immintrin.h>
#else
#define MOEPP_AMX_INT8 0
#endif

namespace moepp {

bool amx_int8_available() { return MOEPP_AMX_INT8 && amx_tiles_granted(); }

#if MOEPP_AMX_INT8
namespace {

constexpr int64_t kBand = 16;  // weight rows per tile

// Tiles 0 and 1: 16 weight rows x one block; 2 and 3: one block of 16 rows of x; 4 to 7:
// 16 x 16 int32 sums (two pairs, used in turn).
void configure_tiles() {
  TileConfig c;
  for (int t : {0, 1}) c.rows[t] = kBand, c.bytes_per_row[t] = kQ8Block;
  for (int t : {2, 3}) c.rows[t] = 8, c.bytes_per_row[t] = 64;
  for (int t : {4, 5, 6, 7}) c.rows[t] = kBand, c.bytes_per_row[t] = 64;
  load_tile_config(c);
}

// Sum tiles c0 and c1 = weight tiles 0 and 1 times x tiles 2 and 3, stored to first and
// second. (The tile intrinsics paste their tile numbers into the assembly, so the numbers
// must be literals: a macro, where a template parameter would not do.)
#define MOEPP_MULTIPLY_ON_TILES(c0, c1, first, second) \
  do {                                                 \
    _tile_zero(c0);                                    \
    _tile_zero(c1);                                    \
    _tile_dpbssd(c0, 0, 2);                            \
    _tile_dpbssd(c1, 1, 3);                            \
    _tile_stored(c0, first, 64);                       \
    _tile_stored(c1, second, 64);                      \
  } while (0)

// y[m, j + i] (+)= the products of every row m of x with weight rows i < n of a band of 16
// (int8 values wq, row stride ldw bytes; scales ws [16, blocks]; rows past n are zeros).
void band_product(const TileRows& x, const int8_t* wq, int64_t ldw, const float* ws, int64_t n, int64_t j, float* y,
                  int64_t ldy, bool accumulate, bool prefetch) {
  constexpr int64_t G = TileRows::kGroup;
  const int64_t blocks = x.cols / kQ8Block, groups = (x.rows + G - 1) / G;
  alignas(64) int32_t sums[4][kBand][G];
  alignas(64) float result[kBand][G];
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* xt = x.tiles.data() + g * blocks * TileRows::kTileBytes;
    const float* dx = x.scales.data() + g * blocks * G;
    __m512 acc[kBand];
#pragma GCC unroll 16
    for (int i = 0; i < kBand; ++i) acc[i] = _mm512_setzero_ps();
    // acc[i] (lanes: rows of x) += the sums of block b times dx * dw.
    const auto scale_in = [&](const int32_t (*s)[G], int64_t b) {
      const __m512 dxb = _mm512_loadu_ps(dx + b * G);
#pragma GCC unroll 16
      for (int i = 0; i < kBand; ++i) {
        const __m512 d = _mm512_mul_ps(dxb, _mm512_set1_ps(ws[i * blocks + b]));
        acc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(__mmask16(0xFFFF), _mm512_load_si512(s[i])), d, acc[i]);
      }
    };
    const bool fetch = prefetch && g == 0;  // later groups find the band in cache
    // Blocks b and b + 1 into sums[2 * slot] and sums[2 * slot + 1], on tiles 4, 5 (slot 0)
    // or 6, 7 (slot 1): the tile multiplies of one pair run while the previous pair is
    // scaled (tiles have no renaming; alternating them lets the two overlap).
    const auto multiply_pair = [&](int64_t b, int slot) {
      if (fetch)
#pragma GCC unroll 16
        for (int i = 0; i < kBand; ++i)
          _mm_prefetch(reinterpret_cast<const char*>(wq + i * ldw + b * kQ8Block) + kWeightPrefetchBytes, _MM_HINT_T0);
      _tile_loadd(0, wq + b * kQ8Block, ldw);
      _tile_loadd(1, wq + (b + 1) * kQ8Block, ldw);
      _tile_loadd(2, xt + b * TileRows::kTileBytes, 64);
      _tile_loadd(3, xt + (b + 1) * TileRows::kTileBytes, 64);
      if (slot == 0) MOEPP_MULTIPLY_ON_TILES(4, 5, sums[0], sums[1]);
      else MOEPP_MULTIPLY_ON_TILES(6, 7, sums[2], sums[3]);
    };
    const int64_t pairs = blocks / 2;
    for (int64_t p = 0; p < pairs; ++p) {
      multiply_pair(2 * p, int(p & 1));
      if (p > 0) {
        const int prev = int((p - 1) & 1);
        scale_in(sums[2 * prev], 2 * (p - 1));
        scale_in(sums[2 * prev + 1], 2 * (p - 1) + 1);
      }
    }
    if (pairs > 0) {
      const int last = int((pairs - 1) & 1);
      scale_in(sums[2 * last], 2 * (pairs - 1));
      scale_in(sums[2 * last + 1], 2 * (pairs - 1) + 1);
    }
    const int64_t b = 2 * pairs;
    if (b < blocks) {  // an odd last block
      _tile_zero(4);
      _tile_loadd(0, wq + b * kQ8Block, ldw);
      _tile_loadd(2, xt + b * TileRows::kTileBytes, 64);
      _tile_dpbssd(4, 0, 2);
      _tile_stored(4, sums[0], 64);
      scale_in(sums[0], b);
    }
#pragma GCC unroll 16
    for (int i = 0; i < kBand; ++i) _mm512_store_ps(result[i], acc[i]);
    const int64_t m0 = g * G, rows = std::min(G, x.rows - m0);
    for (int64_t m = 0; m < rows; ++m) {
      float* dst = y + (m0 + m) * ldy + j;
      for (int64_t i = 0; i < n; ++i) dst[i] = accumulate ? dst[i] + result[i][m] : result[i][m];
    }
  }
}

// Weight row r of a q4 or q8_0 matrix as int8 values (q, without q4's offset) into out [cols].
void widen_row(const PackedMatrix& W, int64_t r, int8_t* out) {
  const int64_t K = W.cols;
  if (W.type == WeightType::q8_0) {
    std::memcpy(out, W.q.data() + r * K, size_t(K));
    return;
  }
  const uint8_t* p = W.nibbles.data() + r * K / 2;
  const __m512i eight = _mm512_set1_epi8(8);
  int64_t k = 0;
  for (; k + 2 * kQ4Block <= K; k += 2 * kQ4Block)
    _mm512_storeu_si512(out + k, _mm512_sub_epi8(unpack_two_q4_blocks(p + k / 2), eight));
  if (k < K) _mm512_mask_storeu_epi8(out + k, __mmask64(0xFFFFFFFF), _mm512_sub_epi8(unpack_one_q4_block(p + k / 2), eight));
}

}  // namespace
#endif

void amx_int8_linear(const TileRows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                     bool accumulate) {
  MOEPP_CHECK((W.type == WeightType::q8_0 || W.type == WeightType::q4) && x.cols == W.cols && amx_int8_available(),
              "amx_int8_linear: ", x.rows, " rows of ", x.cols, " against a ", weight_type_name(W.type), " [", W.rows,
              ", ", W.cols, "]", amx_int8_available() ? "" : " without AMX");
#if MOEPP_AMX_INT8
  const int64_t K = W.cols, blocks = K / kQ8Block;
  thread_local AlignedVector<int8_t> band;  // q4 rows widened, or a last partial band padded
  thread_local AlignedVector<float> band_scales;
  configure_tiles();
  for (int64_t j = j0; j < j1; j += kBand) {
    const int64_t n = std::min(kBand, j1 - j);
    // The band's f16 scales as f32 (zero past a partial last band's rows).
    band_scales.resize(size_t(kBand * blocks));
    const uint16_t* hs = W.scales.data() + j * blocks;
    int64_t i = 0;
    for (; i + 16 <= n * blocks; i += 16) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hs + i));
      _mm512_storeu_ps(band_scales.data() + i, _mm512_maskz_cvtph_ps(__mmask16(0xFFFF), h));
    }
    for (; i < n * blocks; ++i) band_scales[size_t(i)] = f16_to_f32_fast(hs[i]);
    std::fill(band_scales.begin() + n * blocks, band_scales.end(), 0.0f);
    const float* ws = band_scales.data();
    if (W.type == WeightType::q8_0 && n == kBand) {  // used in place
      band_product(x, W.q.data() + j * K, K, ws, n, j, y, ldy, accumulate, true);
      continue;
    }
    band.resize(size_t(kBand * K));
    for (int64_t r = 0; r < n; ++r) widen_row(W, j + r, band.data() + r * K);
    if (n < kBand) std::fill(band.begin() + n * K, band.end(), int8_t(0));  // a partial last band: zero rows
    band_product(x, band.data(), K, ws, n, j, y, ldy, accumulate, false);
  }
  _tile_release();
#else
  (void)j0, (void)j1, (void)y, (void)ldy, (void)accumulate;
#endif
}

}  // namespace moepp
