#include "kernels/quant.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/uninit_vector.h"
#include "io/quant_layout.h"
#include "kernels/amx_int8.h"
#include "kernels/gemm.h"
#include "kernels/int8_dot.h"
#include "kernels/int8_gemm.h"
#include "kernels/quant_blocks.h"
#include "kernels/row_blocks.h"
#include "kernels/vec_math.h"

namespace moepp {

// A file's q8_0 arrays are a PackedMatrix's as they are (io/quant_layout.h).
static_assert(kQ8Block == kQ8FileBlock);

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::f32: return "f32";
    case WeightType::bf16: return "bf16";
    case WeightType::q8_0: return "q8_0";
    case WeightType::q4: return "q4";
  }
  return "?";
}

std::vector<std::string> weight_type_names() {
  std::vector<std::string> names;
  for (WeightType t : kWeightTypes) names.push_back(weight_type_name(t));
  return names;
}

WeightType parse_weight_type(const std::string& name) {
  for (WeightType t : kWeightTypes)
    if (name == weight_type_name(t)) return t;
  throw Error("unknown weight type '" + name + "' (expected f32, bf16, q8_0 or q4)");
}

bool weight_type_fits(WeightType type, int64_t cols) {
  switch (type) {
    case WeightType::q8_0: return cols % kQ8Block == 0;
    case WeightType::q4: return cols % kQ4Block == 0;
    default: return true;
  }
}

namespace {

// q8_0 and q4 keep their scales as f16, whose largest value is 65504: a block whose largest
// weight exceeds 65504 * codes (127 or 8) cannot be stored. Names the first such block.
void check_scales_fit_f16(const PackedMatrix& p, const float* w, float codes) {
  const size_t blocks = p.scales.size();
  for (size_t b = 0; b < blocks; ++b)
    if ((p.scales[b] & 0x7fff) == 0x7c00) {  // inf
      float amax = 0;
      for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(w[int64_t(b) * kQ8Block + i]));
      const int64_t per_row = p.cols / kQ8Block;
      fail("pack: ", weight_type_name(p.type), " stores a block's scale as f16, which holds weights up to ",
           65504.0f * codes, " in magnitude; row ", int64_t(b) / per_row, ", columns ", int64_t(b) % per_row * kQ8Block,
           "-", int64_t(b) % per_row * kQ8Block + kQ8Block - 1, " reach ", amax, " (keep such a model f32 or bf16)");
    }
}

}  // namespace

PackedMatrix PackedMatrix::pack(const float* w, int64_t rows, int64_t cols, WeightType type) {
  MOEPP_CHECK(rows >= 0 && cols > 0, "pack: bad matrix shape [", rows, ", ", cols, "]");
  PackedMatrix p;
  p.type = type;
  p.rows = rows;
  p.cols = cols;
  const size_t n = size_t(rows * cols);
  // The first non-finite weight. A serial isfinite scan took a quarter of a second per
  // GB, as long as the packing itself; instead each chunk sums w - w (0 when finite, NaN
  // otherwise) in vectors on all threads, and only a chunk that is not 0 is searched.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (int64_t(n) + kChunk - 1) / kChunk;
  int64_t bad = int64_t(n);
#pragma omp parallel for reduction(min : bad) schedule(static) if (chunks > 16)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk, i1 = std::min(int64_t(n), i0 + kChunk);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = i0; i < i1; ++i) sum += w[i] - w[i];
    if (sum != 0.0f)
      for (int64_t i = i0; i < i1; ++i)
        if (!std::isfinite(w[i])) {
          bad = std::min(bad, i);
          break;
        }
  }
  MOEPP_CHECK(bad == int64_t(n), "pack: non-finite weight ", bad < int64_t(n) ? w[bad] : 0.0f, " at row ", bad / cols,
              ", column ", bad % cols);
  switch (type) {
    case WeightType::f32:
      p.f32 = PanelMatrix::pack(w, rows, cols);
      break;
    case WeightType::bf16: {
      p.bf16.resize(n);
      uint16_t* bits = p.bf16.mutable_data();
      parallel_for(int64_t(n), [&](int64_t i) { bits[i] = f32_to_bf16(w[i]).bits; }, 1 << 16);
      break;
    }
    case WeightType::q8_0: {
      MOEPP_CHECK(cols % kQ8Block == 0, "pack: q8_0 needs a multiple of ", kQ8Block, " columns, got ", cols);
      const int64_t blocks = n / kQ8Block;
      p.q.resize(n);
      p.scales.resize(size_t(blocks));
      parallel_for(blocks, [&](int64_t b) {
        p.scales[size_t(b)] = f32_to_f16(encode_q8_0_block(w + b * kQ8Block, p.q.mutable_data() + b * kQ8Block, true));
      }, 256);
      check_scales_fit_f16(p, w, 127);
      break;
    }
    case WeightType::q4: {
      MOEPP_CHECK(cols % kQ4Block == 0, "pack: q4 needs a multiple of ", kQ4Block, " columns, got ", cols);
      const int64_t blocks = n / kQ4Block;
      p.nibbles.resize(n / 2);
      p.scales.resize(size_t(blocks));
      // The weight of largest magnitude becomes -8 (its scale rounded up to an f16 value);
      // its opposite would be +8 and is stored as 7 (the one value more than half a step off).
      parallel_for(blocks, [&](int64_t b) {
        const float d = encode_q4_block(w + b * kQ4Block, p.nibbles.mutable_data() + b * kQ4Block / 2);
        p.scales[size_t(b)] = f32_to_f16(d);
      }, 256);
      check_scales_fit_f16(p, w, 8);
      break;
    }
  }
  return p;
}

void PackedMatrix::unpack_rows(int64_t r0, int64_t n, float* out) const {
  MOEPP_CHECK(r0 >= 0 && n >= 0 && r0 + n <= rows, "unpack: rows [", r0, ", ", r0 + n, ") of ", rows);
  const int64_t K = cols, off = r0 * K;
  switch (type) {
    case WeightType::f32:
      f32.unpack_rows(r0, n, out);
      break;
    case WeightType::bf16: {
      // Runs of 1024 values per task (a row's worth or less), 16 at a time in vectors.
      constexpr int64_t kRun = 1024;
      const int64_t total = n * K;
      parallel_for((total + kRun - 1) / kRun, [&](int64_t c) {
        const int64_t i0 = c * kRun, i1 = std::min(total, i0 + kRun);
        const uint16_t* src = bf16.data() + off;
        int64_t i = i0;
#if defined(__AVX512F__)
        for (; i + 16 <= i1; i += 16)
          _mm512_storeu_ps(out + i, widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
        for (; i < i1; ++i) out[i] = bf16_to_f32(moepp::bf16{src[i]});
      }, 64);
      break;
    }
    case WeightType::q8_0: {
      // Block by block (cols is a multiple of the block, so rows hold whole blocks).
      const int64_t blocks = n * K / kQ8Block, b0 = off / kQ8Block;
      parallel_for(blocks, [&](int64_t b) {
        decode_q8_0_block(q.data() + (b0 + b) * kQ8Block, scale(b0 + b), out + b * kQ8Block);
      }, 2048);
      break;
    }
    case WeightType::q4: {
      const int64_t blocks = n * K / kQ4Block, b0 = off / kQ4Block;
      parallel_for(blocks, [&](int64_t b) {
        decode_q4_block(nibbles.data() + (b0 + b) * kQ4Block / 2, scale(b0 + b), out + b * kQ4Block);
      }, 2048);
      break;
    }
  }
}

void round_to_bf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), __m256i(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
#endif
  for (; i < n; ++i) out[i] = f32_to_bf16(x[i]).bits;
}

void PackedMatrix::unpack_rows_bf16(int64_t r0, int64_t n, uint16_t* out) const {
  MOEPP_CHECK(r0 >= 0 && n >= 0 && r0 + n <= rows, "unpack: rows [", r0, ", ", r0 + n, ") of ", rows);
  const int64_t K = cols;
  // (bf16 weights need no copy: packed_linear hands them to the GEMM as stored.)
  MOEPP_CHECK(type == WeightType::q8_0 || type == WeightType::q4,
              "unpack_rows_bf16: only q8_0 and q4 weights are rounded to bf16 here");
  // Block by block: scale * value in f32 (what unpack_rows gives; exact, a f16 scale times
  // a small integer), then rounded to nearest even. 64 blocks a task.
  const int64_t blocks = n * K / kQ8Block, b0 = r0 * K / kQ8Block;
  constexpr int64_t kBlocksPerTask = 64;
  parallel_for((blocks + kBlocksPerTask - 1) / kBlocksPerTask, [&](int64_t task) {
    const int64_t first = task * kBlocksPerTask, last = std::min(blocks, first + kBlocksPerTask);
#if defined(__AVX512BF16__)
    // In registers: the values widened to f32, scaled, and both halves rounded by one
    // instruction (the portable form below went through a stack block and two calls a
    // block: ~10% of a q4 prompt's time on an AMD EPYC).
    for (int64_t b = first; b < last; ++b) {
      const __m512 d = _mm512_set1_ps(scale(b0 + b));
      __m128i lo, hi;  // values 0-15 and 16-31 as int8
      if (type == WeightType::q4) {
        q4_block_values(nibbles.data() + (b0 + b) * kQ4Block / 2, lo, hi);
      } else {
        const int8_t* block = q.data() + (b0 + b) * kQ8Block;
        lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
        hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16));
      }
      const __m512bh rounded = _mm512_cvtne2ps_pbh(_mm512_mul_ps(d, widen_i8(hi)), _mm512_mul_ps(d, widen_i8(lo)));
      _mm512_storeu_si512(out + b * kQ8Block, __m512i(rounded));
    }
#else
    for (int64_t b = first; b < last; ++b) {
      float block[kQ8Block];  // (a q4 block is as long)
      const float d = scale(b0 + b);
      if (type == WeightType::q4) decode_q4_block(nibbles.data() + (b0 + b) * kQ4Block / 2, d, block);
      else decode_q8_0_block(q.data() + (b0 + b) * kQ8Block, d, block);
      round_to_bf16(block, kQ8Block, out + b * kQ8Block);
    }
#endif
  }, 32);
}

size_t PackedMatrix::bytes() const {
  return f32.bytes() + bf16.size() * 2 + q.size() + scales.size() * 2 + nibbles.size();
}

namespace {

constexpr int64_t kMaxDecodeRows = 8;  // up to this many rows of x use the register kernel
constexpr int64_t kMaxInt8BlockRows = 24;  // ... and the int8 one, in blocks of 8, up to this many
// From this many rows of x up, q8_0 and q4 products run on AMX tiles where the CPU has them
// (kernels/amx_int8.h). bench/packed_linear_bench, 2816 x 1024, medians: q8_0 4 rows 0.119
// ms against 0.120 in the register kernel, 5 rows 0.120-0.127 against 0.146, 8 rows 0.111
// against 0.203, 16 rows 0.113 against 0.49-0.52 in the bf16 GEMM; q4 (widened a band at a
// time first) 6 rows 0.146 against 0.145, 7 rows 0.147 against 0.163.
constexpr int64_t min_amx_rows(WeightType type) { return type == WeightType::q4 ? 7 : 5; }

// The largest scratch (floats) a thread keeps between products: 64 MB.
constexpr size_t kKeptScratchFloats = size_t(16) << 20;

// out[m * J + i] = x[m, :] . W[j + i, :] for m < M, i < J; bf16 and q8_0 only. J weight
// rows at once, so that each x vector loaded feeds J FMAs: with one weight row, re-reading
// x (kilobytes a row, from L1/L2) bounded the kernel at a few FMAs a cycle. M and J are
// template arguments so that the loops unroll and the M x J accumulators stay in
// registers. Each (m, j) sums its products in the same order whatever M and J are.
template <int M, int J>
void dot_rows(const float* x, int64_t ldx, const PackedMatrix& W, int64_t j, float* out) {
  const int64_t K = W.cols;
#if defined(__AVX512F__)
  __m512 acc[M][J];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int i = 0; i < J; ++i) acc[m][i] = _mm512_setzero_ps();
  int64_t k = 0;
  __m512 w0[J], w1[J];
  const auto multiply = [&] {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const __m512 x0 = _mm512_loadu_ps(x + m * ldx + k), x1 = _mm512_loadu_ps(x + m * ldx + k + 16);
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) acc[m][i] = _mm512_fmadd_ps(x1, w1[i], _mm512_fmadd_ps(x0, w0[i], acc[m][i]));
    }
  };
  if (W.type == WeightType::q8_0) {
    const int64_t blocks = K / kQ8Block;
    for (; k < K; k += kQ8Block) {
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) {
        const int8_t* q = W.q.data() + (j + i) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(q + kWeightPrefetchBytes), _MM_HINT_T0);
        const __m512 scale = _mm512_set1_ps(W.scale((j + i) * blocks + k / kQ8Block));
        w0[i] = _mm512_mul_ps(scale, widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
        w1[i] = _mm512_mul_ps(scale, widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16))));
      }
      multiply();
    }
  } else {
    for (; k + 32 <= K; k += 32) {
#pragma GCC unroll 4
      for (int i = 0; i < J; ++i) {
        const uint16_t* wr = W.bf16.data() + (j + i) * K + k;
        _mm_prefetch(reinterpret_cast<const char*>(wr) + kWeightPrefetchBytes, _MM_HINT_T0);
        w0[i] = widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr)));
        w1[i] = widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + 16)));
      }
      multiply();
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int i = 0; i < J; ++i) out[m * J + i] = reduce_add(acc[m][i]);
  for (; k < K; ++k)  // bf16 tail
#pragma GCC unroll 4
    for (int i = 0; i < J; ++i) {
      const float w = bf16_to_f32(moepp::bf16{W.bf16[size_t((j + i) * K + k)]});
      for (int m = 0; m < M; ++m) out[m * J + i] += x[m * ldx + k] * w;
    }
#else
  for (int i = 0; i < J; ++i) {
    for (int m = 0; m < M; ++m) out[m * J + i] = 0;
    for (int64_t k = 0; k < K; ++k) {
      const size_t e = size_t((j + i) * K + k);
      const float w = W.type == WeightType::bf16 ? bf16_to_f32(moepp::bf16{W.bf16[e]})
                                                 : W.scale(int64_t(e) / kQ8Block) * float(W.q[e]);
      for (int m = 0; m < M; ++m) out[m * J + i] += x[m * ldx + k] * w;
    }
  }
#endif
}

// y[m, j] (+)= x[m, :] . W[j, :] for m < M and j in [j0, j1): J weight rows at a time (M x J
// accumulators in registers), the rest one by one. bf16 weights go one row at a time (one
// sequential stream from memory; see weight_rows_per_pass in int8_dot.cpp): on an AMD EPYC,
// 2 threads, 8192 x 1024 from memory, J = 1 took 0.40 ms at 1, 2 and 4 rows of x and 0.55
// at 8, where J = 4 (2 at 8 rows) took 0.92-1.10 and 2.0; one row measured fastest with
// J = 1 on the Intel VM too. q8_0 without VNNI keeps J = 4 up to 4 rows of x, else 2
// (one row of x, Intel: 0.110-0.113 ms against 0.122-0.133 with J = 1).
template <int M, int J = (M <= 4 ? 4 : 2)>
void dot_row_range(const float* x, int64_t ldx, const PackedMatrix& W, int64_t j0, int64_t j1, float* y, int64_t ldy,
                   bool accumulate) {
  for_row_blocks<M, J>(j0, j1, y, ldy, accumulate,
                       [&]<int JB>(int64_t j, float* out) { dot_rows<M, JB>(x, ldx, W, j, out); });
}

}  // namespace

void packed_linear(const float* x, int64_t M, int64_t ldx, const PackedMatrix& W, float* y, int64_t ldy,
                   bool accumulate) {
  const int64_t N = W.rows, K = W.cols;
  if (M == 0 || N == 0) return;
  MOEPP_CHECK(ldx >= K && ldy >= N, "packed_linear: strides ", ldx, ", ", ldy, " below the matrix shape [", N, ", ", K,
              "]");
  if (W.type == WeightType::f32) {
    panel_linear(x, M, ldx, W.f32, y, ldy, accumulate);
    return;
  }
  constexpr int64_t chunk = 16;  // weight rows per task
  if (packed_linear_uses_tiles(W, M)) {
    // x quantized once per call (in 16-row tiles) into a buffer each calling thread keeps.
    thread_local TileRows tiles;
    quantize_rows_for_tiles(x, M, ldx, K, tiles);
    packed_linear_tiles(tiles, W, y, ldy, accumulate);
    return;
  }
  static_assert(kMaxDecodeRows == 8, "dot_rows and int8_linear_rows are instantiated for 1 to 8 rows");
  if (packed_products_use_int8(W.type, M)) {
    // q4 (and q8_0 with VNNI): x quantized to int8 once per call, in blocks of up to 8
    // rows, into buffers each calling thread keeps (named through a reference: inside the
    // workers the thread_local's own name would be their own buffers). Each task takes 16
    // weight rows against every block, so the weights are read from memory once. The
    // tasks are shared out with stealing: two threads streaming halves of the weights
    // finished ~15 us apart a ~105 us call (q8_0, 2816 x 1024), one waiting on the other.
    thread_local std::vector<Int8Rows> buffers;
    std::vector<Int8Rows>& xq = buffers;
    const int64_t blocks = (M + kMaxDecodeRows - 1) / kMaxDecodeRows;
    if (xq.size() < size_t(blocks)) xq.resize(size_t(blocks));
    for (int64_t b = 0; b < blocks; ++b)
      quantize_rows_int8(x + b * kMaxDecodeRows * ldx, std::min(kMaxDecodeRows, M - b * kMaxDecodeRows), ldx, K,
                         xq[size_t(b)], W.type);
    parallel_for_stealing((N + chunk - 1) / chunk, [&](int64_t c) {
      const int64_t j0 = c * chunk, j1 = std::min(N, j0 + chunk);
      for (int64_t b = 0; b < blocks; ++b)
        int8_linear_rows(xq[size_t(b)], W, j0, j1, y + b * kMaxDecodeRows * ldy, ldy, accumulate);
    });
    return;
  }
  if (M <= kMaxDecodeRows) {
    parallel_for_stealing((N + chunk - 1) / chunk, [&](int64_t c) {
      const int64_t j0 = c * chunk, j1 = std::min(N, j0 + chunk);
      with_row_count(M, [&]<int R>() {
        if (W.type == WeightType::bf16) return dot_row_range<R, 1>(x, ldx, W, j0, j1, y, ldy, accumulate);
        dot_row_range<R>(x, ldx, W, j0, j1, y, ldy, accumulate);
      });
    });
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  if (packed_linear_uses_bf16(W, M)) {
    // Many rows on a CPU that multiplies bf16 (AMX, AVX-512 BF16): x rounded to bf16 once
    // (its rows padded to tiles), then the bf16 GEMM.
    thread_local UninitVector<uint16_t> x_buffer;
    const uint16_t* xb = round_rows_to_bf16_padded(x, M, ldx, K, x_buffer);
    packed_linear_bf16_padded(xb, M, W, y, ldy, accumulate);
    return;
  }
  // Many rows elsewhere: widen a panel of W to f32 (a few MB, stays in cache) and use the
  // f32 GEMM.
  const int64_t panel = std::max<int64_t>(16, std::min<int64_t>(N, (int64_t(1) << 20) / K));
  std::vector<float> buf(size_t(panel * K));
  for (int64_t r0 = 0; r0 < N; r0 += panel) {
    const int64_t n = std::min(panel, N - r0);
    W.unpack_rows(r0, n, buf.data());
    gemm<float>(Trans::N, Trans::T, M, n, K, 1.0f, x, ldx, buf.data(), K, beta, y + r0, ldy);
  }
}

// Rows the bf16 GEMM is given for M rows of x: M padded to whole AMX tiles of 16 rows.
// oneDNN 2.6's AMX kernel runs most other row counts slower, some several times slower
// (the fused up projection, 5632 x 1024: 106 rows 4.7 ms, 112 rows 1.1 ms), and an
// expert's row count is whatever the router gives it. The padding also bounds the kernels
// a first prompt JIT-compiles. Few rows (<= 16) are bound by reading W and run as they are.
int64_t bf16_gemm_rows(int64_t M) { return M <= 16 ? M : (M + 15) / 16 * 16; }

uint16_t* round_rows_to_bf16_padded(const float* x, int64_t M, int64_t ldx, int64_t K,
                                    UninitVector<uint16_t>& buffer) {
  const int64_t Mp = bf16_gemm_rows(M);
  buffer.resize(size_t(Mp * K));
  uint16_t* xb = buffer.data();
  parallel_for(M, [&](int64_t m) { round_to_bf16(x + m * ldx, K, xb + m * K); });
  std::fill(xb + M * K, xb + Mp * K, uint16_t(0));
  return xb;
}

void packed_linear_bf16_padded(const uint16_t* xb, int64_t M, const PackedMatrix& W, float* y, int64_t ldy,
                               bool accumulate) {
  const int64_t N = W.rows, Mp = bf16_gemm_rows(M);
  if (Mp == M) return packed_linear_bf16_rows(xb, M, W, accumulate ? 1.0f : 0.0f, y, ldy);
  thread_local UninitVector<float> y_buffer;
  y_buffer.resize(size_t(Mp * N));
  const float* padded = y_buffer.data();
  packed_linear_bf16_rows(xb, Mp, W, 0.0f, y_buffer.data(), N);
  parallel_for(M, [&](int64_t m) {
    const float* from = padded + m * N;
    float* to = y + m * ldy;
    if (accumulate) {
      for (int64_t j = 0; j < N; ++j) to[j] += from[j];
    } else {
      std::copy(from, from + N, to);
    }
  });
  // A scratch for many rows of a wide product (all logits of a long prompt: hundreds of
  // MB) is not kept for the thread's life; an expert's few MB are.
  if (y_buffer.size() > kKeptScratchFloats) UninitVector<float>().swap(y_buffer);
}

void packed_linear_bf16_rows(const uint16_t* xb, int64_t rows, const PackedMatrix& W, float beta, float* y,
                             int64_t ldy) {
  const int64_t N = W.rows, K = W.cols;
  if (W.type == WeightType::bf16) return gemm_bf16_nt(rows, N, K, xb, K, W.bf16.data(), K, beta, y, ldy);
  MOEPP_CHECK(W.type != WeightType::f32, "packed_linear_bf16_rows: f32 weights have no bf16 product");
  // q8_0 / q4: each thread takes its share of W's rows and, band by band, rounds them to
  // bf16 into a scratch of 512 KB that stays in its L2 and multiplies that band at once (the
  // GEMM runs serially inside the region, as in gemm_grouped). Rounding the whole matrix
  // first (up to 16 MB: an expert's up projection is 11.5 MB) and then running one GEMM on
  // all threads wrote the scratch out to memory and read it back, and on a shared VM whose
  // neighbours filled the L3 that doubled the rounding's cost: an AMD EPYC's q4 prompt of
  // 512 tokens ran at ~745 or ~990 tokens/s by process, in streaks; with bands it runs at
  // 900-1000 in both states (bench/peer_round, alternating). (Bands with a GEMM on all
  // threads each measured slower: the GEMM's fixed cost per call, paid on every band.)
  constexpr int64_t kBandBytes = int64_t(1) << 19;
  const int64_t band = std::max<int64_t>(16, kBandBytes / (int64_t(sizeof(uint16_t)) * K) / 16 * 16);
  const int64_t threads = std::min<int64_t>(max_threads(), (N + 15) / 16);
  const int64_t share = (N + threads * 16 - 1) / (threads * 16) * 16;
  parallel_for(threads, [&](int64_t t) {
    thread_local UninitVector<uint16_t> w_buffer;
    w_buffer.resize(size_t(band * K));
    uint16_t* wb = w_buffer.data();
    const int64_t end = std::min(N, (t + 1) * share);
    for (int64_t r0 = t * share; r0 < end; r0 += band) {
      const int64_t n = std::min(band, end - r0);
      W.unpack_rows_bf16(r0, n, wb);
      gemm_bf16_nt(rows, n, K, xb, K, wb, K, beta, y + r0, ldy);
    }
  });
}

bool packed_products_use_bf16(WeightType type, int64_t M) {
  return type != WeightType::f32 && M > kMaxDecodeRows && !packed_products_use_int8(type, M) && gemm_bf16_available();
}

bool packed_products_use_int8(WeightType type, int64_t M) {
  // Up to 8 rows: q4 always (its codes have no f32 kernel), q8_0 where vpdpbusd beats
  // widening to f32. Any number of rows on AMX.
  if (packed_products_use_amx(type, M)) return true;
  if (type != WeightType::q4 && type != WeightType::q8_0) return false;
  const bool vectorised = int8_products_vectorised(type);
  if (M <= kMaxDecodeRows) return type == WeightType::q4 || vectorised;
  // 9 to 24 rows (a serving batch's projections) with the vector kernel: in blocks of 8
  // rows it beats rounding the weights to bf16 for the bf16 GEMM. AMD EPYC, 2816 x 1024, 2
  // threads, bf16 GEMM and blocks alternating, two rounds (bench/packed_linear_bench), ms:
  // q8_0 12 rows 0.575, 0.568 -> 0.371, 0.368; 16 rows 0.662, 0.654 -> 0.422, 0.426; 24
  // rows 0.895, 0.854 -> 0.618, 0.721; q4 12 rows 0.58 -> 0.30, 16 rows 0.63 -> 0.39, 24
  // rows 0.85 -> 0.58, 0.68. Blocks of 8 give each row its result alone, bit for bit, which
  // a serving batch wants (kernels/int8_gemm.h sums in another order).
  if (vectorised && M <= kMaxInt8BlockRows) return true;
  // More rows with VNNI: the int8 GEMM, 1.5-1.7x the bf16 GEMM's rate on the same weights
  // rounded (AMD EPYC, 2 threads, q4 and q8_0 2816 x 1024, same run, x's quantization
  // included: 32 rows 0.40-0.46 ms against 0.86-0.89, 128 rows 1.33-1.45 against 2.26-2.28,
  // 512 rows 5.0-5.2 against 7.9-8.2). (Where a build lacks VNNI but oneDNN finds bf16
  // products, the bf16 GEMM below keeps them.)
  return vectorised && int8_gemm_available();
}

bool packed_products_use_amx(WeightType type, int64_t M) {
  return (type == WeightType::q8_0 || type == WeightType::q4) && M >= min_amx_rows(type) && amx_int8_available();
}

bool packed_linear_uses_bf16(const PackedMatrix& W, int64_t M) { return packed_products_use_bf16(W.type, M); }

bool packed_linear_uses_tiles(const PackedMatrix& W, int64_t M) {
  return packed_products_use_amx(W.type, M) || (packed_products_use_int8(W.type, M) && M > kMaxInt8BlockRows);
}

void packed_linear_tiles(const TileRows& x, const PackedMatrix& W, float* y, int64_t ldy, bool accumulate) {
  const int64_t N = W.rows;
  MOEPP_CHECK(packed_linear_uses_tiles(W, x.rows) && x.cols == W.cols && ldy >= N, "packed_linear_tiles: ", x.rows,
              " rows of ", x.cols, " against a ", weight_type_name(W.type), " [", N, ", ", W.cols, "], ldy ", ldy);
  if (!packed_products_use_amx(W.type, x.rows)) {
    int8_gemm(x, W, y, ldy, accumulate);  // VNNI without AMX
    return;
  }
  constexpr int64_t chunk = 16;  // weight rows per task
  parallel_for((N + chunk - 1) / chunk, [&](int64_t c) {
    amx_int8_linear(x, W, c * chunk, std::min(N, c * chunk + chunk), y, ldy, accumulate);
  });
}

}  // namespace moepp
