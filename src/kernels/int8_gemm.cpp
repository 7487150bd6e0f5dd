#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/q4_nibbles.h"
#include "kernels/vec_math.h"

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
constexpr int64_t kBandRows = 60;            // weight rows widened at a time: 60 KB at K = 1024, 10 tiles
constexpr int kTileWeightRows = 6;           // weight rows a register tile takes, against 2 groups of x
constexpr int kVectorsPerBlock = int(kQ8Block / 4);
constexpr int64_t kColumnRows = 2 * kGroup;                         // x rows a tile's products hold
constexpr int64_t kColumnBandRows = (kBandRows + 15) / 16 * 16;    // band rows in whole 16 x 16 blocks

// Weight rows [j0, j0 + n) as unsigned bytes (q4 codes as stored, q + 8; q8_0 values + 128),
// row after row, and their scales as f32 ([n, blocks]).
struct Band {
  AlignedVector<uint8_t> values;
  AlignedVector<float> scales;
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

// columns[i0 + i][16 h + lane] = the product of the band's row i0 + i (R of them) with row
// 16 (g + h) + lane of x (G groups: 1 or 2).
template <int R, int G>
void tile(const TileRows& x, int64_t g, const Band& band, int64_t i0, int shift, float (*columns)[kColumnRows]) {
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
    // (acc dx) dw: dw goes into the multiply-add as a broadcast operand, where dx dw took a
    // broadcast, a register and a multiply of its own (1.06-1.14x on expert shapes).
    __m512 dxv[G];
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) dxv[h] = _mm512_loadu_ps(dx + (h * blocks + b) * kGroup);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
      for (int h = 0; h < G; ++h)
        sums[i][h] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_maskz_cvtepi32_ps(kAll, acc[i][h]), dxv[h]),
                                     _mm512_set1_ps(dw[i * blocks + b]), sums[i][h]);
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int h = 0; h < G; ++h) _mm512_store_ps(columns[i0 + i] + h * kGroup, sums[i][h]);
}

// y[m0 + m, j0 + i] (+)= columns[i][m] for i < n, m < rows: 16 x 16 blocks transposed in
// registers, each row of y written as whole vectors (one strided float a product cost
// ~5% of the GEMM).
void write_columns(const float (*columns)[kColumnRows], int64_t n, int64_t rows, float* y, int64_t ldy,
                   bool accumulate) {
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    const int64_t width = std::min<int64_t>(16, n - c0);
    const __mmask16 keep = __mmask16((1u << width) - 1);
    for (int64_t h = 0; h * kGroup < rows; ++h) {
      __m512 r[16];
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) r[k] = _mm512_load_ps(columns[c0 + k] + h * kGroup);
      transpose16(r);
      const int64_t count = std::min<int64_t>(16, rows - h * kGroup);
      for (int64_t m = 0; m < count; ++m) {
        float* dst = y + (h * kGroup + m) * ldy + c0;
        const __m512 v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(keep, dst), r[m]) : r[m];
        _mm512_mask_storeu_ps(dst, keep, v);
      }
    }
  }
}

// Lines [first, first + count) of `bytes` prefetched into L2: a slice of the next band's
// weights, asked for while this band's tiles compute.
void prefetch_lines(const void* bytes, int64_t size, int64_t first, int64_t count) {
  const char* p = static_cast<const char*>(bytes);
  for (int64_t l = first; l < first + count && l * 64 < size; ++l) _mm_prefetch(p + l * 64, _MM_HINT_T1);
}

template <int G, int... R>
void tile_of(int rows, std::integer_sequence<int, R...>, const TileRows& x, int64_t g, const Band& band, int64_t i0,
             int shift, float (*columns)[kColumnRows]) {
  ((rows == R + 1 ? tile<R + 1, G>(x, g, band, i0, shift, columns) : void()), ...);
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
  // Each thread an equal share of the rows in whole tiles, walked in bands (whole bands
  // per thread left one thread idle for a band's time at the end: 5 bands of 60 rows at
  // N = 256 ran at 0.8x).
  const int64_t tiles = (N + kTileWeightRows - 1) / kTileWeightRows;
  const int64_t threads = std::min<int64_t>(max_threads(), tiles);
  const int64_t per_thread = (tiles + threads - 1) / threads * kTileWeightRows;
  parallel_for(threads, [&](int64_t t) {
    thread_local Band band;
    // The band's products with two groups of x, a band row a line pair. Rows past the
    // band that the last 16 x 16 block reads (zero, or a longer band's) are left out of y
    // by the store's mask.
    alignas(64) float columns[kColumnBandRows][kColumnRows] = {};
    const int64_t end = std::min(N, (t + 1) * per_thread);
    for (int64_t j0 = t * per_thread; j0 < end; j0 += kBandRows) {
      const int64_t n = std::min(kBandRows, end - j0);
      widen_band(W, j0, n, band);
      // The next band's weights, a slice before each tile: widening a band straight from
      // memory took ~8% of the GEMM's samples in a prompt (1.04-1.07x at K = 1024, the
      // same at K = 2816, whose bands fill more of L2).
      const int64_t next_rows = std::min(kBandRows, end - j0 - n);
      const void* next = W.type == WeightType::q8_0 ? static_cast<const void*>(W.q.data() + (j0 + n) * W.cols)
                                                    : static_cast<const void*>(W.nibbles.data() + (j0 + n) * W.cols / 2);
      const int64_t next_size = next_rows * (W.type == WeightType::q8_0 ? W.cols : W.cols / 2);
      const int64_t calls = (groups + 1) / 2 * ((n + kTileWeightRows - 1) / kTileWeightRows);
      const int64_t per_call = (next_size / 64 + calls) / calls;
      int64_t line = 0;
      for (int64_t g = 0; g < groups; g += 2) {
        for (int64_t i0 = 0; i0 < n; i0 += kTileWeightRows) {
          if (next_rows > 0) prefetch_lines(next, next_size, line, per_call);
          line += per_call;
          const int rows = int(std::min<int64_t>(kTileWeightRows, n - i0));
          const auto seq = std::make_integer_sequence<int, kTileWeightRows>();
          if (g + 1 < groups)
            tile_of<2>(rows, seq, x, g, band, i0, shift, columns);
          else
            tile_of<1>(rows, seq, x, g, band, i0, shift, columns);
        }
        const int64_t m0 = g * kGroup;
        write_columns(columns, n, std::min<int64_t>(2 * kGroup, x.rows - m0), y + m0 * ldy + j0, ldy, accumulate);
      }
    }
  });
#else
  (void)y, (void)ldy, (void)accumulate;
#endif
}

}  // namespace moepp
