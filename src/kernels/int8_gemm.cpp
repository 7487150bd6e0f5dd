#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/quant.h"

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
constexpr int64_t kGroup = 16;      // weight rows a vector holds (one a lane)
constexpr int64_t kBandRows = 64;   // weight rows laid out at a time: 64 KB at K = 1024
constexpr int kMaxTileRows = 6;     // rows of x a register tile takes, against 2 groups
constexpr int64_t kVectorsPerBlock = kQ8Block / 4;  // 8 vectors of 4 values a lane

// A band of weight rows laid out for the tile: for group g (16 rows) and block b, 8 vectors
// at values[((g * blocks + b) * 8 + v) * 64], whose lane r holds row 16g + r's values 4v to
// 4v + 3 of block b, unsigned; the 16 rows' scales at scales[(g * blocks + b) * 16]. Rows
// past the matrix's are zeros, so a band always holds whole pairs of groups.
struct Band {
  std::vector<uint8_t> values;
  std::vector<float> scales;
  std::vector<uint8_t> rows;  // one group's rows, unsigned, row after row, before the transpose
};

// Row r of W as unsigned bytes (q4 codes as stored, q + 8; q8_0 values + 128).
void unsigned_row(const PackedMatrix& W, int64_t r, uint8_t* out) {
  const int64_t K = W.cols;
  if (W.type == WeightType::q8_0) {
    const int8_t* q = W.q.data() + r * K;
    const __m512i flip = _mm512_set1_epi8(char(0x80));
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) _mm512_storeu_si512(out + k, _mm512_xor_si512(_mm512_loadu_si512(q + k), flip));
    const __mmask64 tail = __mmask64(0xFFFFFFFF);  // K is a multiple of 32: at most one block left
    if (k < K) _mm512_mask_storeu_epi8(out + k, tail, _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, q + k), flip));
    return;
  }
  const uint8_t* p = W.nibbles.data() + r * K / 2;
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (int64_t b = 0; b < K / kQ4Block; ++b) {  // byte i: value i low, value i + 16 high
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + b * kQ4Block / 2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * kQ4Block), _mm_and_si128(raw, low4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * kQ4Block + 16), _mm_and_si128(_mm_srli_epi16(raw, 4), low4));
  }
}

// Lays out W's rows [j0, j0 + n) (n <= kBandRows) into band; returns its groups (even).
int64_t lay_out_band(const PackedMatrix& W, int64_t j0, int64_t n, Band& band) {
  const int64_t K = W.cols, blocks = K / kQ8Block;
  const int64_t groups = (n + 2 * kGroup - 1) / (2 * kGroup) * 2;
  band.values.resize(size_t(groups * blocks * kQ8Block * kGroup));
  band.scales.resize(size_t(groups * blocks * kGroup));
  band.rows.resize(size_t(kGroup * K));
  // Lane r of vector v gathers row r's 32-bit word v of the block: rows are K bytes apart.
  const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                           _mm512_set1_epi32(int(K)));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t live = std::clamp<int64_t>(n - g * kGroup, 0, kGroup);
    for (int64_t r = 0; r < live; ++r) unsigned_row(W, j0 + g * kGroup + r, band.rows.data() + r * K);
    std::fill(band.rows.begin() + live * K, band.rows.end(), uint8_t(0));
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* out = band.values.data() + (g * blocks + b) * kQ8Block * kGroup;
      for (int64_t v = 0; v < kVectorsPerBlock; ++v)
        _mm512_storeu_si512(out + v * 64, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), kAll, lanes, band.rows.data() + b * kQ8Block + 4 * v, 1));
      float* scales = band.scales.data() + (g * blocks + b) * kGroup;
      for (int64_t r = 0; r < kGroup; ++r) scales[r] = r < live ? W.scale((j0 + g * kGroup + r) * blocks + b) : 0.0f;
    }
  }
  return groups;
}

// y[m0 + m, j + c] (+)= the products of rows m0 .. m0 + R of x with the band's groups g and g
// + 1 (weight rows j .. j + 32), for c < cols.
template <int R>
void tile(const Int8Rows& x, int64_t m0, const Band& band, int64_t g, int64_t j, int64_t cols, float* y, int64_t ldy,
          bool accumulate) {
  const int64_t K = x.cols, blocks = K / kQ8Block;
  const uint8_t* v0 = band.values.data() + g * blocks * kQ8Block * kGroup;
  const uint8_t* v1 = v0 + blocks * kQ8Block * kGroup;
  const float* s0 = band.scales.data() + g * blocks * kGroup;
  const float* s1 = s0 + blocks * kGroup;
  const int8_t* xq = x.q.data() + m0 * K;
  const float* dx = x.scales.data() + m0 * blocks;
  const int32_t* bias = x.block_bias.data() + m0 * blocks;
  __m512 sums[R][2];
#pragma GCC unroll 6
  for (int m = 0; m < R; ++m) sums[m][0] = sums[m][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i acc[R][2];
#pragma GCC unroll 6
    for (int m = 0; m < R; ++m) acc[m][0] = acc[m][1] = _mm512_set1_epi32(bias[m * blocks + b]);
    const uint8_t* w0 = v0 + b * kQ8Block * kGroup;
    const uint8_t* w1 = v1 + b * kQ8Block * kGroup;
#pragma GCC unroll 8
    for (int v = 0; v < kVectorsPerBlock; ++v) {
      const __m512i a0 = _mm512_loadu_si512(w0 + v * 64), a1 = _mm512_loadu_si512(w1 + v * 64);
#pragma GCC unroll 6
      for (int m = 0; m < R; ++m) {
        int32_t four;
        std::memcpy(&four, xq + m * K + b * kQ8Block + 4 * v, sizeof(four));
        const __m512i xv = _mm512_set1_epi32(four);
        acc[m][0] = _mm512_dpbusd_epi32(acc[m][0], a0, xv);
        acc[m][1] = _mm512_dpbusd_epi32(acc[m][1], a1, xv);
      }
    }
    const __m512 dw0 = _mm512_loadu_ps(s0 + b * kGroup), dw1 = _mm512_loadu_ps(s1 + b * kGroup);
#pragma GCC unroll 6
    for (int m = 0; m < R; ++m) {
      const __m512 d = _mm512_set1_ps(dx[m * blocks + b]);
      sums[m][0] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, acc[m][0]), _mm512_mul_ps(dw0, d), sums[m][0]);
      sums[m][1] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, acc[m][1]), _mm512_mul_ps(dw1, d), sums[m][1]);
    }
  }
  const __mmask16 first = __mmask16((1u << std::min<int64_t>(cols, 16)) - 1);
  const __mmask16 second = cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
#pragma GCC unroll 6
  for (int m = 0; m < R; ++m) {
    float* out = y + (m0 + m) * ldy + j;
    __m512 lo = sums[m][0], hi = sums[m][1];
    if (accumulate) {
      lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(first, out));
      hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(second, out + 16));
    }
    _mm512_mask_storeu_ps(out, first, lo);
    _mm512_mask_storeu_ps(out + 16, second, hi);
  }
}

template <int... R>
void tile_of(int rows, std::integer_sequence<int, R...>, const Int8Rows& x, int64_t m0, const Band& band, int64_t g,
             int64_t j, int64_t cols, float* y, int64_t ldy, bool accumulate) {
  ((rows == R + 1 ? tile<R + 1>(x, m0, band, g, j, cols, y, ldy, accumulate) : void()), ...);
}

}  // namespace
#endif

void int8_gemm(const Int8Rows& x, const PackedMatrix& W, float* y, int64_t ldy, bool accumulate) {
  MOEPP_CHECK((W.type == WeightType::q4 || W.type == WeightType::q8_0) && W.type == x.weights && x.cols == W.cols &&
                  int8_gemm_available() && int64_t(x.block_bias.size()) == x.rows * x.cols / kQ8Block,
              "int8_gemm: ", x.rows, " rows of ", x.cols, " quantized for ", weight_type_name(x.weights),
              " against a ", weight_type_name(W.type), " [", W.rows, ", ", W.cols, "]",
              int8_gemm_available() ? "" : " without AVX-512 VNNI");
#if MOEPP_INT8_GEMM
  const int64_t N = W.rows, M = x.rows;
  // Each thread a share of whole bands (the last one's shorter).
  const int64_t threads = std::min<int64_t>(max_threads(), (N + kBandRows - 1) / kBandRows);
  const int64_t bands = (N + kBandRows - 1) / kBandRows, per_thread = (bands + threads - 1) / threads;
  parallel_for(threads, [&](int64_t t) {
    thread_local Band band;
    for (int64_t j0 = t * per_thread * kBandRows; j0 < std::min(N, (t + 1) * per_thread * kBandRows); j0 += kBandRows) {
      const int64_t n = std::min(kBandRows, N - j0);
      const int64_t groups = lay_out_band(W, j0, n, band);
      for (int64_t m0 = 0; m0 < M; m0 += kMaxTileRows) {
        const int rows = int(std::min<int64_t>(kMaxTileRows, M - m0));
        for (int64_t g = 0; g < groups; g += 2) {
          const int64_t cols = std::min<int64_t>(2 * kGroup, n - g * kGroup);
          tile_of(rows, std::make_integer_sequence<int, kMaxTileRows>(), x, m0, band, g, j0 + g * kGroup, cols, y,
                  ldy, accumulate);
        }
      }
    }
  });
#else
  (void)y, (void)ldy, (void)accumulate;
#endif
}

}  // namespace moepp
