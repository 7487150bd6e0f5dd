// q4 weights and int8 activations (kernels/int8_dot.h): packing against the definition (in
// double), quantized activations against theirs, and the int8 products on q4 and q8_0
// weights against a naive double implementation of the same quantized arithmetic (integer
// block sums exact, the scales applied in double), for every row count of the few-row
// kernel, odd block counts, strides and accumulation; many rows against the bf16 (or f32)
// GEMM's arithmetic.
#include "kernels/int8_dot.h"

#include <cmath>

#include "core/dtype.h"
#include "kernels/gemm.h"
#include "int8_reference.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

// The few-row int8 product on `type` weights: the kernel this CPU runs (packed_linear's
// for up to 4 rows; from 5 on AMX takes over where the CPU has it: amx_int8_test), or the
// portable one.
void int8_product(const float* x, int64_t M, int64_t ldx, const PackedMatrix& p, float* y, int64_t ldy, bool acc,
                  bool portable) {
  Int8Rows q;
  quantize_rows_int8(x, M, ldx, p.cols, q, p.type);
  (portable ? int8_linear_rows_portable : int8_linear_rows)(q, p, 0, p.rows, y, ldy, acc);
}

// The vector kernel's copy of quantized rows: vector u, lane L of group g of row m holds
// the 4 values int8_lane_source names (zeros for the padding blocks past the row's last),
// each lane its block's scale and -offset times the sum of its 16 values.
void expect_lane_order(const Int8Rows& q) {
  const int64_t M = q.rows, K = q.cols, blocks = K / 32, groups = (blocks + 7) / 8;
  const int64_t offset = q.weights == WeightType::q4 ? 8 : 128;
  ASSERT_EQ(q.groups(), groups);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t m = 0; m < M; ++m)
      for (int L = 0; L < 16; ++L) {
        const int64_t block = g * 8 + int8_lane_source(q.weights, 0, L).block;
        int64_t sum = 0;
        for (int u = 0; u < 4; ++u) {
          EXPECT_EQ(int8_lane_source(q.weights, u, L).block + g * 8, block);
          for (int t = 0; t < 4; ++t) {
            const int64_t value = int8_lane_source(q.weights, u, L).value + t;
            const int64_t want = block < blocks ? q.q[size_t(m * K + block * 32 + value)] : 0;
            EXPECT_EQ(q.lane_q[size_t((g * M + m) * 256 + (u * 16 + L) * 4 + t)], want)
                << weight_type_name(q.weights) << " " << g << " " << m << " " << u << " " << L << " " << t;
            sum += want;
          }
        }
        const size_t lane = size_t((g * M + m) * 16 + L);
        EXPECT_EQ(q.lane_bias[lane], -offset * sum);
        EXPECT_EQ(q.lane_scales[lane], block < blocks ? q.scales[size_t(m * blocks + block)] : 0.0f);
      }
}

}  // namespace

TEST(Q4, StoresPeakOverMinus8AndRoundsWithinHalfAStep) {
  Rng rng(11);
  const int64_t R = 5, K = 96;
  auto w = random_tensor<float>({R, K}, rng, 0.7);
  for (int64_t k = 32; k < 64; ++k) w[2 * K + k] = 0;  // an all-zero block: scale 0, exact zeros
  w[3 * K + 5] = 9.0f;                                  // a positive peak: the scale is negative
  const auto p = PackedMatrix::pack(w.data(), R, K, WeightType::q4);
  ASSERT_EQ(p.scales.size(), size_t(R * K / 32));
  ASSERT_EQ(p.nibbles.size(), size_t(R * K / 2));
  EXPECT_EQ(p.bytes(), size_t(R * K / 2 + R * K / 32 * 2));
  Tensor<float> back({R, K});
  p.unpack_rows(0, R, back.data());
  for (int64_t b = 0; b < R * K / 32; ++b) {
    double peak = 0;
    for (int64_t i = 0; i < 32; ++i)
      if (std::fabs(double(w[b * 32 + i])) > std::fabs(peak)) peak = w[b * 32 + i];
    // The stored f16 scale: peak / -8 rounded up in magnitude (within 2^-10 of it).
    const double exact = peak / -8, d = p.scale(b);
    EXPECT_EQ(f16_to_f32(f32_to_f16(float(d))), float(d)) << b;
    EXPECT_GE(std::fabs(d), std::fabs(exact)) << b;
    EXPECT_LE(std::fabs(d), std::fabs(exact) * (1 + 1.0 / 1024)) << b;
    for (int64_t i = 0; i < 32; ++i) {
      const double x = w[b * 32 + i], code = q4_code(p, b * 32 + i);
      // Nearest of -8..7 steps of d; only a value past 7.5 steps (the peak's opposite side) clamps to 7.
      const double step = d == 0 ? 0 : x / d, want = std::min(7.0, std::max(-8.0, std::nearbyint(step)));
      if (std::fabs(step - std::nearbyint(step)) < 0.4999) {
        EXPECT_EQ(code, want) << b << " " << i;
      }
      EXPECT_LE(std::fabs(x - d * code), std::fabs(d) * (step > 7.5 ? 1.0 : 0.5) * (1 + 1e-5)) << b << " " << i;
      // Unpacking is exactly scale * value, from the bytes as the layout defines them.
      EXPECT_EQ(back[b * 32 + i], p.scale(b) * float(code)) << b << " " << i;
    }
  }
  EXPECT_EQ(back[2 * K + 40], 0.0f);
  EXPECT_LT(p.scale(3 * K / 32), 0.0f);
  EXPECT_EQ(back[3 * K + 5], 9.0f);  // the peak is stored exactly (-8 steps of -9/8)
  Tensor<float> part({2, K});
  p.unpack_rows(3, 2, part.data());
  for (int64_t i = 0; i < 2 * K; ++i) EXPECT_EQ(part[i], back[3 * K + i]) << i;
  // bf16 unpacking (the many-row GEMM's weights) is bf16 of the same values.
  std::vector<uint16_t> halves(size_t(2 * K));
  p.unpack_rows_bf16(3, 2, halves.data());
  for (int64_t i = 0; i < 2 * K; ++i) EXPECT_EQ(halves[size_t(i)], f32_to_bf16(part[i]).bits) << i;
}

TEST(Q4, ActivationsQuantizeToAmaxOver127WithinHalfAStep) {
  Rng rng(12);
  const int64_t M = 3, K = 96, ldx = 101;
  auto x = random_tensor<float>({M, ldx}, rng, 2.0);
  for (int64_t k = 64; k < 96; ++k) x[1 * ldx + k] = 0;  // a zero block
  Int8Rows q, q8;
  quantize_rows_int8(x.data(), M, ldx, K, q);
  quantize_rows_int8(x.data(), M, ldx, K, q8, WeightType::q8_0);  // the same values, q8_0's offset
  EXPECT_EQ(q8.q, q.q);
  ASSERT_EQ(q.rows, M);
  ASSERT_EQ(q.cols, K);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < K / 32; ++b) {
      double amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(x[m * ldx + b * 32 + i])));
      const double d = q.scales[size_t(m * K / 32 + b)];
      EXPECT_NEAR(d, amax / 127, 1e-7 * amax + 1e-30);
      for (int64_t i = 0; i < 32; ++i) {
        const double v = x[m * ldx + b * 32 + i], code = q.q[size_t(m * K + b * 32 + i)];
        EXPECT_LE(std::fabs(code), 127);
        EXPECT_LE(std::fabs(v - d * code), d / 2 * (1 + 1e-5)) << m << " " << b << " " << i;
      }
    }
  expect_lane_order(q);
  expect_lane_order(q8);
  // Two groups, the second with one block of 8.
  Int8Rows wide, wide8;
  const auto x2 = random_tensor<float>({M, 288}, rng, 2.0);
  quantize_rows_int8(x2.data(), M, 288, 288, wide);
  quantize_rows_int8(x2.data(), M, 288, 288, wide8, WeightType::q8_0);
  expect_lane_order(wide);
  expect_lane_order(wide8);
  EXPECT_EQ(q.scales[size_t(1 * K / 32 + 2)], 0.0f);
}

// Few rows: exactly the int8 arithmetic, whatever the row count (batch invariance: a row's
// result does not depend on the rows beside it), on q4 and on q8_0 weights (whose values
// span the whole int8 range: the unsigned-offset trick must not overflow), by the kernel
// this CPU runs and by the portable one.
TEST(Q4, FewRowProductIsTheInt8ArithmeticAndBatchInvariant) {
  Rng rng(13);
  for (bool portable : {false, true})
  for (WeightType type : {WeightType::q4, WeightType::q8_0})
  for (int64_t K : {32, 64, 96, 160, 288, 1024, 1184}) {  // groups of 8 blocks: one partial; whole; whole + 1, + 5
    const int64_t N = 37, ldx = K + 3, ldy = N + 5, Mmax = 8;
    auto w = random_tensor<float>({N, K}, rng);
    auto x = random_tensor<float>({Mmax, ldx}, rng);
    const auto p = PackedMatrix::pack(w.data(), N, K, type);
    std::vector<float> alone(size_t(Mmax * ldy));  // each row multiplied on its own
    for (int64_t m = 0; m < Mmax; ++m)
      int8_product(x.data() + m * ldx, 1, ldx, p, alone.data() + m * ldy, ldy, false, portable);
    for (int64_t M = 1; M <= Mmax; ++M)
      for (bool acc : {false, true}) {
        auto y = random_tensor<float>({M, ldy}, rng);
        std::vector<float> got(y.data(), y.data() + y.numel());
        int8_product(x.data(), M, ldx, p, got.data(), ldy, acc, portable);
        Int8Rows q;
        quantize_rows_int8(x.data(), M, ldx, K, q, type);
        const double worst = int8_product_error(q, p, got.data(), y.data(), alone.data(), M, ldy, acc);
        EXPECT_LT(worst, 1e-5) << (portable ? "portable " : "") << weight_type_name(type) << " K " << K << " M " << M
                               << " acc " << acc;
      }
  }
}

// int8 activations approximate the f32 product of x and the stored weights to their
// accuracy; many rows without AMX take the bf16 GEMM (or the f32 one) on the same stored weights.
TEST(Q4, ProductsApproximateTheStoredWeights) {
  Rng rng(14);
  const int64_t K = 256, N = 40, ldx = K, ldy = N;
  auto w = random_tensor<float>({N, K}, rng);
  const auto p = PackedMatrix::pack(w.data(), N, K, WeightType::q4);
  Tensor<float> stored({N, K});
  p.unpack_rows(0, N, stored.data());
  for (int64_t M : {1, 8, 9, 40}) {
    auto x = random_tensor<float>({M, ldx}, rng);
    std::vector<float> got(size_t(M * ldy));
    packed_linear(x.data(), M, ldx, p, got.data(), ldy);
    const bool bf16_gemm = packed_linear_uses_bf16(p, M), int8 = packed_products_use_int8(p.type, M);
    EXPECT_EQ(bf16_gemm, M > 8 && gemm_bf16_available() && !int8);
    EXPECT_TRUE(int8 || M > 8);
    std::vector<double> want(size_t(M * ldy));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k) {
          const float xv = bf16_gemm ? bf16_to_f32(f32_to_bf16(x[m * ldx + k])) : x[m * ldx + k];
          const float wv = bf16_gemm ? bf16_to_f32(f32_to_bf16(stored[j * K + k])) : stored[j * K + k];
          want[size_t(m * ldy + j)] += double(xv) * wv;
        }
    // The GEMMs: exact up to f32 sums. int8 x (few rows, or any on AMX): x within half an
    // int8 step (amax/254) a value, ~0.4% of the product's size here.
    EXPECT_LT(rel_error(got.data(), want.data(), M * ldy), int8 ? 1e-2 : 2e-6) << "M " << M;
    if (int8) {
      EXPECT_GT(rel_error(got.data(), want.data(), M * ldy), 1e-5) << "x is quantized";
    }
  }
}

TEST(Q4, RejectsWhatItCannotStore) {
  std::vector<float> w(48, 1.0f);
  EXPECT_THROW(PackedMatrix::pack(w.data(), 1, 48, WeightType::q4), Error);  // 48 % 32 != 0
  EXPECT_FALSE(weight_type_fits(WeightType::q4, 48));
  EXPECT_TRUE(weight_type_fits(WeightType::q4, 96));
  w[7] = NAN;
  EXPECT_THROW(PackedMatrix::pack(w.data(), 1, 32, WeightType::q4), Error);
  EXPECT_EQ(parse_weight_type("q4"), WeightType::q4);
}
