#include "kernels/int8_dot.h"

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

}  // namespace

void quantize_rows_int8(const float* x, int64_t M, int64_t ldx, int64_t K, Int8Rows& out, WeightType weights) {
  MOEPP_CHECK(K % kQ4Block == 0, "quantize_rows_int8: ", K, " columns, not a multiple of ", kQ4Block);
  MOEPP_CHECK(weights == WeightType::q4 || weights == WeightType::q8_0, "quantize_rows_int8: for ",
              weight_type_name(weights), " weights");
  const int64_t blocks = K / kQ4Block;
  const int32_t offset = unsigned_offset(weights);
  out.rows = M;
  out.cols = K;
  out.weights = weights;
  out.q.resize(size_t(M * K));
  out.scales.resize(size_t(M * blocks));
  out.lane_scales.resize(size_t(M * K / 4));
  out.lane_bias.resize(size_t(M * K / 4));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < blocks; ++b) {
      // A row's block is quantized exactly as a q8_0 weight block is.
      int8_t* q = out.q.data() + m * K + b * kQ4Block;
      const float d = encode_q8_0_block(x + m * ldx + b * kQ4Block, q);
      out.scales[size_t(m * blocks + b)] = d;
      const size_t lane = size_t(m * K / 4 + b * kQ4Block / 4);
#if defined(__AVX2__)
      // The 8 lanes' sums of 4: byte pairs (1 * q) summed to 16 bits, then pairs of those.
      const __m256i q32 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
      const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q32), _mm256_set1_epi16(1));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.lane_bias.data() + lane),
                          _mm256_mullo_epi32(sums, _mm256_set1_epi32(-offset)));
      _mm256_storeu_ps(out.lane_scales.data() + lane, _mm256_set1_ps(d));
#else
      for (int64_t l = 0; l < kQ4Block / 4; ++l) {
        const int32_t sum = int32_t(q[4 * l]) + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3];
        out.lane_scales[lane + size_t(l)] = d;
        out.lane_bias[lane + size_t(l)] = -offset * sum;
      }
#endif
    }
}

namespace {

#if defined(__AVX512F__) && defined(__AVX512BW__)

constexpr __mmask16 kAll = 0xFFFF;

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

// out[m * J + i] = row m of x . weight row j + i, for m < M, i < J. Each (m, i) has its own
// accumulators, so its sum is the same whatever M and J are.
template <WeightType WT, bool Vector, int M, int J>
void int8_dot_rows(const Int8Rows& x, const PackedMatrix& W, int64_t j, float* out) {
  const int64_t K = W.cols, blocks = K / kQ4Block;
  if constexpr (Vector && vector_kernel<WT>()) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    __m512 acc[M][J];
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) acc[m][i] = _mm512_setzero_ps();
    // Lanes 0-7 take block b's scale, lanes 8-15 block b + 1's.
    const __m512i pair_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i sign_flip = _mm512_set1_epi8(char(0x80));
    __m512i wv[J];
    __m512 ws[J];
    const auto multiply = [&](int64_t b, __mmask64 x_mask, __mmask16 lane_mask) {
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) {
        const __m512i xv = _mm512_maskz_loadu_epi8(x_mask, x.q.data() + m * K + b * kQ4Block);
        const int64_t lane = m * K / 4 + b * kQ4Block / 4;
        const __m512i bias = _mm512_maskz_loadu_epi32(lane_mask, x.lane_bias.data() + lane);
        const __m512 xs = _mm512_maskz_loadu_ps(lane_mask, x.lane_scales.data() + lane);
#pragma GCC unroll 4
        for (int i = 0; i < J; ++i) {
          const __m512 sums = _mm512_maskz_cvtepi32_ps(kAll, dot_u8s8(bias, wv[i], xv));
          acc[m][i] = _mm512_fmadd_ps(sums, _mm512_mul_ps(ws[i], xs), acc[m][i]);
        }
      }
    };
    // The weights of blocks b (and b + 1) of row j + i as unsigned bytes in x's order.
    const auto load_weights = [&](int i, int64_t b, bool two) {
      if constexpr (WT == WeightType::q4) {
        const uint8_t* w = W.nibbles.data() + (j + i) * K / 2 + b * kQ4Block / 2;
        if (two) _mm_prefetch(reinterpret_cast<const char*>(w) + kWeightPrefetchBytes, _MM_HINT_T0);
        return two ? unpack_two_q4_blocks(w) : unpack_one_q4_block(w);
      } else {
        const int8_t* w = W.q.data() + (j + i) * K + b * kQ4Block;
        if (two) _mm_prefetch(reinterpret_cast<const char*>(w) + kWeightPrefetchBytes, _MM_HINT_T0);
        const __m512i raw = two ? _mm512_loadu_si512(w) : _mm512_maskz_loadu_epi8(__mmask64(0xFFFFFFFF), w);
        return _mm512_maskz_xor_epi32(two ? kAll : __mmask16(0x00FF), raw, sign_flip);
      }
    };
    int64_t b = 0;
    // One row of x (decode): 16 blocks at a time, their 16 scales of each weight row
    // widened in one conversion, then spread over a pair's lanes by one permutation; the
    // pair-by-pair form below loads, moves and converts each pair's two scales first, a
    // third of a q4 pair's instructions. AMD EPYC, 2816 x 1024 (packed_linear_bench, two
    // rounds alternating): q4 0.054 -> 0.047 ms, q8_0 0.098-0.100 -> 0.088-0.096. With 2
    // rows of x and more it measured slower (2 rows: q4 0.067-0.070 -> 0.078; 8 rows 0.19
    // -> 0.32 when it took all row counts): the accumulators need the registers.
    // The weight scales are multiplied by x's block scales there too, 16 at once (the same
    // products the pairs' lanes take one by one below, so the sums are the same).
    const __m512i two = _mm512_set1_epi32(2);
    for (; M == 1 && b + 16 <= blocks; b += 16) {
      const __m512 x_scales16 = _mm512_loadu_ps(x.scales.data() + b);
      __m512 scales16[J];
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i)
        scales16[i] = _mm512_mul_ps(
            _mm512_maskz_cvtph_ps(kAll, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                            W.scales.data() + (j + i) * blocks + b))),
            x_scales16);
      __m512i index = pair_index;
#pragma GCC unroll 8
      for (int pair = 0; pair < 8; ++pair) {
        const int64_t at = b + 2 * pair;
        const __m512i xv = _mm512_loadu_si512(x.q.data() + at * kQ4Block);
        const __m512i bias = _mm512_loadu_si512(x.lane_bias.data() + at * kQ4Block / 4);
#pragma GCC unroll 4
        for (int i = 0; i < J; ++i) {
          const __m512 sums = _mm512_maskz_cvtepi32_ps(kAll, dot_u8s8(bias, load_weights(i, at, true), xv));
          acc[0][i] = _mm512_fmadd_ps(sums, _mm512_maskz_permutexvar_ps(kAll, index, scales16[i]), acc[0][i]);
        }
        index = _mm512_add_epi32(index, two);
      }
    }
    for (; b + 2 <= blocks; b += 2) {
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) {
        wv[i] = load_weights(i, b, true);
        // The two blocks' f16 scales (one 32-bit load), widened, then spread over their lanes.
        uint32_t two;
        std::memcpy(&two, W.scales.data() + (j + i) * blocks + b, sizeof(two));
        const __m256i two_scales = _mm256_zextsi128_si256(_mm_cvtsi32_si128(int(two)));
        ws[i] = _mm512_maskz_permutexvar_ps(kAll, pair_index, _mm512_maskz_cvtph_ps(0x3, two_scales));
      }
      multiply(b, ~__mmask64(0), kAll);
    }
    if (b < blocks) {  // an odd last block: the high lanes stay 0
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) {
        wv[i] = load_weights(i, b, false);
        ws[i] = _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(W.scale((j + i) * blocks + b)));
      }
      multiply(b, __mmask64(0xFFFFFFFF), 0x00FF);
    }
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) out[m * J + i] = reduce_add(acc[m][i]);
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
template <WeightType WT, int M>
constexpr int weight_rows_per_pass() {
  if (M == 1 || (WT == WeightType::q8_0 && M <= 4)) return 1;
  return M <= 4 ? 4 : 2;
}

template <WeightType WT, bool Vector, int M, int J = weight_rows_per_pass<WT, M>()>
void int8_row_range(const Int8Rows& x, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                    bool accumulate) {
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

}  // namespace

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
