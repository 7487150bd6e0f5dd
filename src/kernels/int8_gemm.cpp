#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/q4_nibbles.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define MOEPP_INT8_GEMM 1
#include <immintrin.h>
#else
#define MOEPP_INT8_GEMM 0
#endif

namespace moepp {

bool int8_gemm_available() { return MOEPP_INT8_GEMM; }

#if MOEPP_INT8_GEMM
namespace {

// (Masked forms with every lane set: GCC 12 warns on the unmasked ones' undefined inputs.)
constexpr __mmask16 kAll = 0xFFFF;
constexpr int64_t kGroup = TileRows::kGroup;  // rows of x a vector holds
constexpr int64_t kBandRows = 64;            // weight rows widened at a time: 64 KB at K = 1024
constexpr int kTileWeightRows = 6;           // weight rows a register tile takes, against 2 groups of x
constexpr int kVectorsPerBlock = int(kQ8Block / 4);

// Weight rows [j0, j0 + n) as unsigned bytes (q4 codes as stored, q + 8; q8_0 values + 128),
// row after row, and their scales as f32 ([n, blocks]).
struct Band {
  std::vector<uint8_t> values;
  std::vector<float> scales;
};

void widen_band(const PackedMatrix& W, int64_t j0, int64_t n, Band& band) {
  const int64_t K = W.cols, blocks = K / kQ8Block;
  band.values.resize(size_t(n * K));
  band.scales.resize(size_t(n * blocks));
  for (int64_t r = 0; r < n; ++r) {
    uint8_t* out = band.values.data() + r * K;
    if (W.type == WeightType::q8_0) {
      const int8_t* q = W.q.data() + (j0 + r) * K;
      const __m512i flip = _mm512_set1_epi8(char(0x80));
      int64_t k = 0;
      for (; k + 64 <= K; k += 64) _mm512_storeu_si512(out + k, _mm512_xor_si512(_mm512_loadu_si512(q + k), flip));
      const __mmask64 tail = __mmask64(0xFFFFFFFF);  // K is a multiple of 32: at most one block left
      if (k < K) _mm512_mask_storeu_epi8(out + k, tail, _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, q + k), flip));
    } else {
      const uint8_t* p = W.nibbles.data() + (j0 + r) * K / 2;
      int64_t b = 0;
      for (; b + 2 <= blocks; b += 2) _mm512_storeu_si512(out + b * kQ4Block, unpack_two_q4_blocks(p + b * kQ4Block / 2));
      if (b < blocks)
        _mm512_mask_storeu_epi8(out + b * kQ4Block, __mmask64(0xFFFFFFFF), unpack_one_q4_block(p + b * kQ4Block / 2));
    }
    const uint16_t* h = W.scales.data() + (j0 + r) * blocks;
    float* s = band.scales.data() + r * blocks;
    int64_t b = 0;
    for (; b + 16 <= blocks; b += 16)
      _mm512_storeu_ps(s + b, _mm512_maskz_cvtph_ps(kAll, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + b))));
    for (; b < blocks; ++b) s[b] = W.scale((j0 + r) * blocks + b);
  }
}

// y[m, j + i] (+)= the products of x's groups g and g + 1 (G of them: 1 or 2) with the
// band's rows i0 .. i0 + R (weight rows j .. j + R), for rows m < x.rows.
template <int R, int G>
void tile(const TileRows& x, int64_t g, const Band& band, int64_t i0, int shift, int64_t j, float* y, int64_t ldy,
          bool accumulate) {
  const int64_t K = x.cols, blocks = K / kQ8Block;
  const int8_t* xt = x.tiles.data() + g * blocks * TileRows::kTileBytes;
  const float* dx = x.scales.data() + g * blocks * kGroup;
  const int32_t* xs = x.sums.data() + g * blocks * kGroup;
  const uint8_t* w = band.values.data() + i0 * K;
  const float* dw = band.scales.data() + i0 * blocks;
  __m512 sums[R][G];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) sums[i][h] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i acc[R][G];
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) {
      // -offset * each row's block sum, offset = 1 << shift.
      const __m512i bias = _mm512_sub_epi32(
          _mm512_setzero_si512(), _mm512_maskz_slli_epi32(kAll, _mm512_loadu_si512(xs + (h * blocks + b) * kGroup), unsigned(shift)));
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) acc[i][h] = bias;
    }
#pragma GCC unroll 8
    for (int v = 0; v < kVectorsPerBlock; ++v) {
      __m512i xv[G];
#pragma GCC unroll 2
      for (int h = 0; h < G; ++h) xv[h] = _mm512_loadu_si512(xt + (h * blocks + b) * TileRows::kTileBytes + v * 64);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        int32_t four;
        std::memcpy(&four, w + i * K + b * kQ8Block + 4 * v, sizeof(four));
        const __m512i wv = _mm512_set1_epi32(four);
#pragma GCC unroll 2
        for (int h = 0; h < G; ++h) acc[i][h] = _mm512_dpbusd_epi32(acc[i][h], wv, xv[h]);
      }
    }
    __m512 dxv[G];
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) dxv[h] = _mm512_loadu_ps(dx + (h * blocks + b) * kGroup);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m512 d = _mm512_set1_ps(dw[i * blocks + b]);
#pragma GCC unroll 2
      for (int h = 0; h < G; ++h)
        sums[i][h] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, acc[i][h]), _mm512_mul_ps(dxv[h], d), sums[i][h]);
    }
  }
  // Lanes are rows of x: out through a small transpose in memory.
  alignas(64) float out[R][G * kGroup];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) _mm512_store_ps(out[i] + h * kGroup, sums[i][h]);
  const int64_t m0 = g * kGroup, rows = std::min<int64_t>(G * kGroup, x.rows - m0);
  for (int64_t m = 0; m < rows; ++m) {
    float* dst = y + (m0 + m) * ldy + j;
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) dst[i] = accumulate ? dst[i] + out[i][m] : out[i][m];
  }
}

template <int G, int... R>
void tile_of(int rows, std::integer_sequence<int, R...>, const TileRows& x, int64_t g, const Band& band, int64_t i0,
             int shift, int64_t j, float* y, int64_t ldy, bool accumulate) {
  ((rows == R + 1 ? tile<R + 1, G>(x, g, band, i0, shift, j, y, ldy, accumulate) : void()), ...);
}

}  // namespace
#endif

void int8_gemm(const TileRows& x, const PackedMatrix& W, float* y, int64_t ldy, bool accumulate) {
  const int64_t blocks = x.cols / kQ8Block, groups = (x.rows + TileRows::kGroup - 1) / TileRows::kGroup;
  MOEPP_CHECK((W.type == WeightType::q4 || W.type == WeightType::q8_0) && x.cols == W.cols && x.cols % kQ8Block == 0 &&
                  int8_gemm_available() && int64_t(x.sums.size()) == groups * blocks * TileRows::kGroup,
              "int8_gemm: ", x.rows, " rows of ", x.cols, " against a ", weight_type_name(W.type), " [", W.rows, ", ",
              W.cols, "]", int8_gemm_available() ? "" : " without AVX-512 VNNI");
#if MOEPP_INT8_GEMM
  const int64_t N = W.rows;
  const int shift = W.type == WeightType::q4 ? 3 : 7;  // the unsigned form's offset: 8 or 128
  // Each thread a share of whole bands (the last one's shorter).
  const int64_t bands = (N + kBandRows - 1) / kBandRows;
  const int64_t threads = std::min<int64_t>(max_threads(), bands), per_thread = (bands + threads - 1) / threads;
  parallel_for(threads, [&](int64_t t) {
    thread_local Band band;
    const int64_t end = std::min(N, (t + 1) * per_thread * kBandRows);
    for (int64_t j0 = t * per_thread * kBandRows; j0 < end; j0 += kBandRows) {
      const int64_t n = std::min(kBandRows, N - j0);
      widen_band(W, j0, n, band);
      for (int64_t g = 0; g < groups; g += 2)
        for (int64_t i0 = 0; i0 < n; i0 += kTileWeightRows) {
          const int rows = int(std::min<int64_t>(kTileWeightRows, n - i0));
          const auto seq = std::make_integer_sequence<int, kTileWeightRows>();
          if (g + 1 < groups)
            tile_of<2>(rows, seq, x, g, band, i0, shift, j0 + i0, y, ldy, accumulate);
          else
            tile_of<1>(rows, seq, x, g, band, i0, shift, j0 + i0, y, ldy, accumulate);
        }
    }
  });
#else
  (void)y, (void)ldy, (void)accumulate;
#endif
}

}  // namespace moepp
