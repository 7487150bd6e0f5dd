#include "kernels/int8_dot.h"

#include <algorithm>
#include <array>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "kernels/q4_nibbles.h"
#include "kernels/quant_blocks.h"
#include "kernels/row_blocks.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {

constexpr int32_t unsigned_offset(WeightType t) { return t == WeightType::q4 ? 8 : 128; }

// A group of blocks (Int8Rows): 8 blocks, 16 lanes of the 4 vectors, 256 values.
constexpr int64_t kGroupBlocks = 8;
constexpr int kLanes = 16;
constexpr int64_t kGroupValues = kGroupBlocks * kQ4Block;
// A group's weights are fetched 12 groups of q4 (6 of q8_0) ahead: twice the few-row
// kernels' distance. One-sequence q8_0 decode (AMD EPYC, decode_bench --batch 1, builds
// alternating): 768, 1536 and 3072 bytes within the VM's noise of each other, 1536 ahead
// in more rounds.
constexpr int64_t kGroupPrefetchBytes = 2 * kWeightPrefetchBytes;

#if defined(__AVX512F__) && defined(__AVX512BW__)

constexpr __mmask16 kAll = 0xFFFF;

// The first n bytes of a 64-byte vector (none for n <= 0, all from 64 on).
inline __mmask64 first_bytes(int64_t n) {
  return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1;
}

// Each lane's block within a group (int8_lane_source), to spread a group's 8 block scales
// over its 16 lanes.
template <WeightType WT>
alignas(64) inline constexpr std::array<int32_t, kLanes> kLaneBlock = [] {
  std::array<int32_t, kLanes> block{};
  for (int L = 0; L < kLanes; ++L) block[size_t(L)] = int8_lane_source(WT, 0, L).block;
  return block;
}();

// acc + per 32-bit lane the sum of the four products of unsigned bytes of w and signed
// bytes of x (no saturation: here |products| <= 15 * 128).
inline __m512i dot_u8s8(__m512i acc, __m512i w, __m512i x) {
#if defined(__AVX512VNNI__)
  return _mm512_dpbusd_epi32(acc, w, x);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), _mm512_set1_epi16(1)));
#endif
}

#endif

// Whether the vector kernel runs for these weights (see the header on q8_0 without VNNI).
template <WeightType WT>
constexpr bool vector_kernel() {
#if defined(__AVX512F__) && defined(__AVX512BW__)
#if defined(__AVX512VNNI__)
  return true;
#else
  return WT == WeightType::q4;
#endif
#else
  return false;
#endif
}

// Weight j's value i (signed) and where its row starts in the stored bytes.
template <WeightType WT>
int32_t weight_value(const PackedMatrix& W, int64_t j, int64_t i) {
  if constexpr (WT == WeightType::q4) {
    const uint8_t byte = W.nibbles[size_t(j * W.cols / 2 + i / kQ4Block * 16 + i % 16)];
    return int32_t(i % kQ4Block < 16 ? byte & 0x0F : byte >> 4) - 8;
  } else {
    return W.q[size_t(j * W.cols + i)];
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)

// Group g of weight row j (nb of its 8 blocks exist) as stored: q8_0 4 vectors of two
// blocks, q4 2 vectors of four, and the 8 f16 scales (zeros past the row's last block).
struct RawGroup {
  __m512i v[4];
  __m128i scales;
};

template <WeightType WT>
inline RawGroup load_raw_group(const PackedMatrix& W, int64_t j, int64_t g, int64_t nb) {
  const int64_t K = W.cols, blocks = K / kQ4Block;
  constexpr int vectors = WT == WeightType::q4 ? 2 : 4;
  const int8_t* row = WT == WeightType::q4
                          ? reinterpret_cast<const int8_t*>(W.nibbles.data() + j * K / 2 + g * kGroupValues / 2)
                          : W.q.data() + j * K + g * kGroupValues;
  const int64_t bytes = nb * kQ4Block * vectors / 4;
  RawGroup r;
  for (int p = 0; p < vectors; ++p) {
    if (nb == kGroupBlocks) {
      _mm_prefetch(reinterpret_cast<const char*>(row + 64 * p) + kGroupPrefetchBytes, _MM_HINT_T0);
      r.v[p] = _mm512_loadu_si512(row + 64 * p);
    } else {
      r.v[p] = _mm512_maskz_loadu_epi8(first_bytes(bytes - 64 * p), row + 64 * p);
    }
  }
  const uint16_t* s = W.scales.data() + j * blocks + g * kGroupBlocks;
  if (nb == kGroupBlocks) {
    r.scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  } else {
    // A 512-bit masked load (the 128-bit form needs AVX-512 VL), its low quarter taken by
    // the generic builtin (GCC 12's cast leaves the rest "undefined" and warns).
    const __v8di part = __v8di(_mm512_maskz_loadu_epi16(__mmask32((1u << nb) - 1), s));
    r.scales = __m128i(__builtin_shufflevector(part, part, 0, 1));
  }
  return r;
}

// A group as unsigned bytes in the lane order of Int8Rows (int8_lane_source), and each
// lane's block scale.
template <WeightType WT>
inline void arrange_group(const RawGroup& r, __m512i w[4], __m512& scale) {
  if constexpr (WT == WeightType::q4) {
    // Four blocks a vector: quarter c of v[0] is block c, of v[1] block 4 + c. Their low 8
    // bytes side by side, then their high 8 bytes, each split into low and high nibbles.
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i first = _mm512_maskz_unpacklo_epi64(0xFF, r.v[0], r.v[1]);
    const __m512i second = _mm512_maskz_unpackhi_epi64(0xFF, r.v[0], r.v[1]);
    w[0] = _mm512_and_si512(first, low4);
    w[1] = _mm512_and_si512(_mm512_maskz_srli_epi16(~__mmask32(0), first, 4), low4);
    w[2] = _mm512_and_si512(second, low4);
    w[3] = _mm512_and_si512(_mm512_maskz_srli_epi16(~__mmask32(0), second, 4), low4);
  } else {
    // Two blocks a vector, made unsigned (XOR 0x80), then each 128-bit quarter's 4 x 4
    // words transposed across the 4 vectors.
    const __m512i sign_flip = _mm512_set1_epi8(char(0x80));
    __m512i v[4];
    for (int p = 0; p < 4; ++p) v[p] = _mm512_maskz_xor_epi32(kAll, r.v[p], sign_flip);
    const __m512i t0 = _mm512_maskz_unpacklo_epi32(kAll, v[0], v[1]), t1 = _mm512_maskz_unpackhi_epi32(kAll, v[0], v[1]);
    const __m512i t2 = _mm512_maskz_unpacklo_epi32(kAll, v[2], v[3]), t3 = _mm512_maskz_unpackhi_epi32(kAll, v[2], v[3]);
    w[0] = _mm512_maskz_unpacklo_epi64(0xFF, t0, t2);
    w[1] = _mm512_maskz_unpackhi_epi64(0xFF, t0, t2);
    w[2] = _mm512_maskz_unpacklo_epi64(0xFF, t1, t3);
    w[3] = _mm512_maskz_unpackhi_epi64(0xFF, t1, t3);
  }
  scale = _mm512_maskz_permutexvar_ps(kAll, _mm512_load_si512(kLaneBlock<WT>.data()),
                                      _mm512_maskz_cvtph_ps(kAll, _mm256_zextsi128_si256(r.scales)));
}

// acc[m] += group g of weight row (raw as loaded) against group g of every row m of x:
// the 4 weight vectors and their scale are arranged once for all M rows.
template <WeightType WT, int M>
inline void multiply_group(const Int8Rows& x, int64_t g, const RawGroup& raw, __m512 (&acc)[M]) {
  const int8_t* xq = x.lane_q.data() + g * M * kGroupValues;
  const int32_t* bias = x.lane_bias.data() + g * M * kLanes;
  const float* x_scales = x.lane_scales.data() + g * M * kLanes;
  __m512i w[4];
  __m512 w_scale;
  arrange_group<WT>(raw, w, w_scale);
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) {
    __m512i sums = _mm512_loadu_si512(bias + m * kLanes);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) sums = dot_u8s8(sums, w[u], _mm512_loadu_si512(xq + m * kGroupValues + 64 * u));
    const __m512 scale = _mm512_mul_ps(w_scale, _mm512_loadu_ps(x_scales + m * kLanes));
    acc[m] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAll, sums), scale, acc[m]);
  }
}

// y[m, j] (+)= the products for m < M and weight rows j in [j0, j1), one weight row at a
// time, as one stream of groups: each group's loads are issued before the previous group
// is multiplied, across the ends of rows too. A group needs all its lines before it can
// be multiplied; with the next one's loads in flight, memory stays busy (measured in one
// process against the 16-blocks-a-pass kernel this replaced, q8_0 rows of 1536 values:
// 1.08-1.19x its time when the pipeline stopped at each row's end, 1.11x with none, 1.00-
// 1.02x streamed).
// The sums are those of int8_dot_rows, operation for operation.
template <WeightType WT, int M>
void int8_rows_streamed(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                        bool accumulate) {
  const int64_t blocks = W.cols / kQ4Block, full = blocks / kGroupBlocks;
  RawGroup next{};
  if (full > 0 && j0 < j1) next = load_raw_group<WT>(W, j0, 0, kGroupBlocks);
  for (int64_t j = j0; j < j1; ++j) {
    __m512 acc[M];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    for (int64_t g = 0; g < full; ++g) {
      const RawGroup now = next;
      if (g + 1 < full) {
        next = load_raw_group<WT>(W, j, g + 1, kGroupBlocks);
      } else if (j + 1 < j1) {
        next = load_raw_group<WT>(W, j + 1, 0, kGroupBlocks);
      }
      multiply_group<WT, M>(x, g, now, acc);
    }
    if (full < x.groups()) multiply_group<WT, M>(x, full, load_raw_group<WT>(W, j, full, blocks - full * kGroupBlocks), acc);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      float& dst = y[m * ldy + j];
      const float sum = reduce_add(acc[m]);
      dst = accumulate ? dst + sum : sum;
    }
  }
}

#endif

// out[m * J + i] = row m of x . weight row j + i, for m < M, i < J. Each (m, i) has its own
// accumulators and goes through the same operations whatever M and J are, so its sum is
// the same.
template <WeightType WT, bool Vector, int M, int J>
void int8_dot_rows(const Int8Rows& x, const PackedMatrix& W, int64_t j, float* out) {
  const int64_t K = W.cols, blocks = K / kQ4Block;
  if constexpr (Vector && vector_kernel<WT>()) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    __m512 acc[J][M];
#pragma GCC unroll 4
    for (int i = 0; i < J; ++i)
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) acc[i][m] = _mm512_setzero_ps();
    const int64_t full = blocks / kGroupBlocks;
    for (int64_t g = 0; g < full; ++g)
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) multiply_group<WT, M>(x, g, load_raw_group<WT>(W, j + i, g, kGroupBlocks), acc[i]);
    if (full < x.groups())
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i)
        multiply_group<WT, M>(x, full, load_raw_group<WT>(W, j + i, full, blocks - full * kGroupBlocks), acc[i]);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) out[m * J + i] = reduce_add(acc[i][m]);
#endif
  } else {
    for (int m = 0; m < M; ++m)
      for (int i = 0; i < J; ++i) {
        float sum = 0;
        for (int64_t b = 0; b < blocks; ++b) {
          const int8_t* xq = x.q.data() + m * K + b * kQ4Block;
          int32_t isum = 0;
          for (int64_t t = 0; t < kQ4Block; ++t) isum += xq[t] * weight_value<WT>(W, j + i, b * kQ4Block + t);
          sum += W.scale((j + i) * blocks + b) * x.scales[size_t(m * blocks + b)] * float(isum);
        }
        out[m * J + i] = sum;
      }
  }
}

// How many weight rows one pass reads side by side for M activation rows. More rows reuse
// each activation load, but they split the weights into as many interleaved streams: with
// few activation rows the products keep up with memory, and reading row after row (one
// sequential stream) is what lets it arrive at full rate. On an AMD EPYC (2 threads,
// 2816 x 1024 weights from memory; bench/packed_linear_bench): q8_0 one row at a time is
// 1.5x faster than four at 1 activation row, 1.7x at 2 and 1.8x at 4, but 0.7-0.9x at 8;
// q4, whose rows are half as long, gains ~8% at 1 row and loses beyond.
// The same choice measured best again after the kernel took 8 blocks a group (J = 1 or 2
// for q4 at 2-4 rows, J = 1 for every type: 0-50% slower, by row count). On the Zen 5
// class VM of 2026-12-06, q8_0 at 5-8 rows ran faster one weight row a pass too (0.106-0.157
// -> 0.098-0.125 ms, 1.08-1.4x; two weight rows of 8 left the compiler short of registers,
// spilling sums), while q4 kept its choice (J = 1 at 5-6 rows 1.1-1.3x slower, level at 7-8).
template <WeightType WT, int M>
constexpr int weight_rows_per_pass() {
  if (M == 1 || WT == WeightType::q8_0) return 1;
  return M <= 4 ? 4 : 2;
}

template <WeightType WT, bool Vector, int M, int J = weight_rows_per_pass<WT, M>()>
void int8_row_range(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                    bool accumulate) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if constexpr (J == 1 && Vector && vector_kernel<WT>()) return int8_rows_streamed<WT, M>(x, W, j0, j1, y, ldy, accumulate);
#endif
  for_row_blocks<M, J>(j0, j1, y, ldy, accumulate,
                       [&]<int JB>(int64_t j, float* out) { int8_dot_rows<WT, Vector, M, JB>(x, W, j, out); });
}

template <bool Vector>
void int8_linear_rows_impl(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                           bool accumulate) {
  MOEPP_CHECK((W.type == WeightType::q4 || W.type == WeightType::q8_0) && W.type == x.weights && x.cols == W.cols &&
                  x.rows >= 1 && x.rows <= 8,
              "int8_linear_rows: ", x.rows, " rows of ", x.cols, " quantized for ", weight_type_name(x.weights),
              " against a ", weight_type_name(W.type), " [", W.rows, ", ", W.cols, "]");
  with_row_count(x.rows, [&]<int R>() {
    if (W.type == WeightType::q4)
      int8_row_range<WeightType::q4, Vector, R>(x, W, j0, j1, y, ldy, accumulate);
    else
      int8_row_range<WeightType::q8_0, Vector, R>(x, W, j0, j1, y, ldy, accumulate);
  });
}

#if defined(__AVX512F__) && defined(__AVX512BW__)

// Group g of a quantized row of x (q: its 256 values in order, of which nb blocks exist;
// scales: the blocks' scales) in the lane order of the weights, with each lane's bias and
// scale: the 64 words gathered from 4 vectors by a table made from int8_lane_source.
template <WeightType WT>
void arrange_x_group(const int8_t* q, const float* scales, int64_t nb, int8_t* lanes, int32_t* bias,
                     float* lane_scales) {
  struct Tables {
    alignas(64) int32_t word[4][kLanes];  // within a pair of vectors (0-31)
    __mmask16 from_second_pair[4];        // the word is in vectors 2-3
  };
  static constexpr Tables t = [] {
    Tables t{};
    for (int u = 0; u < 4; ++u) {
      t.from_second_pair[u] = 0;
      for (int L = 0; L < kLanes; ++L) {
        const Int8LaneSource from = int8_lane_source(WT, u, L);
        const int word = from.block * int(kQ4Block / 4) + from.value / 4;
        t.word[u][L] = word % 32;
        if (word >= 32) t.from_second_pair[u] = __mmask16(t.from_second_pair[u] | (1u << L));
      }
    }
    return t;
  }();
  __m512i v[4];
  for (int p = 0; p < 4; ++p) v[p] = _mm512_maskz_loadu_epi8(first_bytes(nb * kQ4Block - 64 * p), q + 64 * p);
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i sums = _mm512_setzero_si512();
  for (int u = 0; u < 4; ++u) {
    const __m512i word = _mm512_load_si512(t.word[u]);
    const __m512i arranged = _mm512_mask_blend_epi32(t.from_second_pair[u], _mm512_permutex2var_epi32(v[0], word, v[1]),
                                                     _mm512_permutex2var_epi32(v[2], word, v[3]));
    _mm512_storeu_si512(lanes + 64 * u, arranged);
    sums = dot_u8s8(sums, ones, arranged);
  }
  _mm512_storeu_si512(bias, _mm512_mullo_epi32(sums, _mm512_set1_epi32(-unsigned_offset(WT))));
  const __m512 block_scales = _mm512_maskz_loadu_ps(__mmask16((1u << nb) - 1), scales);
  _mm512_storeu_ps(lane_scales, _mm512_maskz_permutexvar_ps(kAll, _mm512_load_si512(kLaneBlock<WT>.data()), block_scales));
}

#endif

}  // namespace

void quantize_rows_int8(const float* x, int64_t M, int64_t ldx, int64_t K, Int8Rows& out, WeightType weights) {
  MOEPP_CHECK(K % kQ4Block == 0, "quantize_rows_int8: ", K, " columns, not a multiple of ", kQ4Block);
  MOEPP_CHECK(weights == WeightType::q4 || weights == WeightType::q8_0, "quantize_rows_int8: for ",
              weight_type_name(weights), " weights");
  const int64_t blocks = K / kQ4Block;
  out.rows = M;
  out.cols = K;
  const int64_t groups = out.groups();
  out.weights = weights;
  out.q.resize(size_t(M * K));
  out.scales.resize(size_t(M * blocks));
  out.lane_q.resize(size_t(M * groups * kGroupValues));
  out.lane_scales.resize(size_t(M * groups * kLanes));
  out.lane_bias.resize(size_t(M * groups * kLanes));
  for (int64_t m = 0; m < M; ++m) {
    // A row's block is quantized exactly as a q8_0 weight block is.
    for (int64_t b = 0; b < blocks; ++b)
      out.scales[size_t(m * blocks + b)] =
          encode_q8_0_block(x + m * ldx + b * kQ4Block, out.q.data() + m * K + b * kQ4Block);
    for (int64_t g = 0; g < groups; ++g) {
      int8_t* lanes = out.lane_q.data() + (g * M + m) * kGroupValues;
      const int64_t at = (g * M + m) * kLanes;
#if defined(__AVX512F__) && defined(__AVX512BW__)
      const int8_t* q = out.q.data() + m * K + g * kGroupValues;
      const float* scales = out.scales.data() + m * blocks + g * kGroupBlocks;
      const int64_t nb = std::min(kGroupBlocks, blocks - g * kGroupBlocks);
      (weights == WeightType::q4 ? arrange_x_group<WeightType::q4> : arrange_x_group<WeightType::q8_0>)(
          q, scales, nb, lanes, out.lane_bias.data() + at, out.lane_scales.data() + at);
#else
      const int32_t offset = unsigned_offset(weights);
      for (int L = 0; L < kLanes; ++L) {
        const int64_t block = g * kGroupBlocks + int8_lane_source(weights, 0, L).block;
        int32_t sum = 0;
        for (int u = 0; u < 4; ++u) {
          int8_t* to = lanes + (u * kLanes + L) * 4;
          if (block < blocks) {
            std::memcpy(to, out.q.data() + m * K + block * kQ4Block + int8_lane_source(weights, u, L).value, 4);
          } else {
            std::memset(to, 0, 4);  // a padding block: no values, no scale
          }
          sum += int32_t(to[0]) + to[1] + to[2] + to[3];
        }
        out.lane_bias[size_t(at + L)] = -offset * sum;
        out.lane_scales[size_t(at + L)] = block < blocks ? out.scales[size_t(m * blocks + block)] : 0.0f;
      }
#endif
    }
  }
}

void int8_linear_rows(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                      bool accumulate) {
  int8_linear_rows_impl<true>(x, W, j0, j1, y, ldy, accumulate);
}

bool int8_products_vectorised(WeightType weights) {
  return weights == WeightType::q4 ? vector_kernel<WeightType::q4>() : vector_kernel<WeightType::q8_0>();
}

void int8_linear_rows_portable(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y,
                               int64_t ldy, bool accumulate) {
  int8_linear_rows_impl<false>(x, W, j0, j1, y, ldy, accumulate);
}

}  // namespace moepp
