// Compact weights: q8_0 and bf16 packing error bounds (against the definitions, in double),
// and packed_linear against a naive double product over the same stored weights, for the
// decode kernel (M <= 8) and the panel + GEMM path, with strides and accumulation.
#include "kernels/quant.h"

#include <cmath>

#include "core/dtype.h"
#include "kernels/gemm.h"
#include "kernels/int8_dot.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

// The stored scale of a block whose exact scale is d (max|w| / 127, or the q4 peak / -8): an
// f16 value (8.5 / 4.5 bits a weight), the nearest one at or above |d| in magnitude, so no
// weight is clipped. Within one f16 step of d: 2^-10 relative where f16 is normal, its
// smallest subnormal step (2^-24) below that.
void expect_f16_scale_at_or_above(float stored, double d, int64_t block) {
  EXPECT_EQ(f16_to_f32(f32_to_f16(stored)), stored) << "block " << block << ": an f16 value";
  EXPECT_GE(std::fabs(double(stored)), std::fabs(d)) << "block " << block;
  EXPECT_LE(std::fabs(double(stored)), std::fabs(d) * (1 + 1.0 / 1024) + std::ldexp(1.0, -24)) << "block " << block;
  EXPECT_TRUE(d == 0 || std::signbit(stored) == std::signbit(d)) << "block " << block;
}

}  // namespace

TEST(Quant, Q8_0StoresAnF16ScaleOfMaxOver127AndRoundsWithinHalfAStep) {
  Rng rng(1);
  const int64_t R = 5, K = 96;
  auto w = random_tensor<float>({R, K}, rng, 0.7);
  for (int64_t k = 32; k < 64; ++k) w[2 * K + k] = 0;  // an all-zero block: scale 0, exact zeros
  // Blocks of tiny weights: scales in f16's subnormal range (1e-6 / 127) and below its
  // smallest value; rounded up, they still hold every weight within half a step, unclipped.
  for (int64_t k = 0; k < 32; ++k) w[4 * K + k] *= 1e-6f;
  for (int64_t k = 32; k < 64; ++k) w[4 * K + k] *= 1e-9f;
  const auto p = PackedMatrix::pack(w.data(), R, K, WeightType::q8_0);
  ASSERT_EQ(p.scales.size(), size_t(R * K / 32));
  Tensor<float> back({R, K});
  p.unpack_rows(0, R, back.data());
  for (int64_t b = 0; b < R * K / 32; ++b) {
    double amax = 0;
    for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(double(w[b * 32 + i])));
    const float d = p.scale(b);
    expect_f16_scale_at_or_above(d, amax / 127, b);
    for (int64_t i = 0; i < 32; ++i) {
      EXPECT_LE(std::abs(int(p.q[size_t(b * 32 + i)])), 127);
      EXPECT_LE(std::fabs(double(back[b * 32 + i]) - w[b * 32 + i]), double(d) / 2 * (1 + 1e-5)) << b << " " << i;
    }
  }
  EXPECT_EQ(back[2 * K + 40], 0.0f);
  EXPECT_EQ(p.bytes(), size_t(R * K + R * K / 32 * 2));
  // Unpacking is exactly scale * value, from any first row.
  for (int64_t i = 0; i < R * K; ++i) EXPECT_EQ(back[i], p.scale(i / 32) * float(p.q[size_t(i)])) << i;
  Tensor<float> part({2, K});
  p.unpack_rows(3, 2, part.data());
  for (int64_t i = 0; i < 2 * K; ++i) EXPECT_EQ(part[i], back[3 * K + i]) << i;
}

TEST(Quant, Bf16RoundsToNearestAndUnpacksExactly) {
  Rng rng(2);
  auto w = random_tensor<float>({3, 20}, rng);
  const auto p = PackedMatrix::pack(w.data(), 3, 20, WeightType::bf16);
  Tensor<float> back({3, 20});
  p.unpack_rows(1, 2, back.data());
  for (int64_t i = 0; i < 40; ++i) {
    EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(w[20 + i])));
    EXPECT_LE(std::fabs(back[i] - w[20 + i]), std::fabs(w[20 + i]) / 256);  // 8 significant bits
  }
}

TEST(Quant, PackedLinearMatchesNaiveDoubleForEveryTypeAndShape) {
  Rng rng(3);
  for (WeightType t : {WeightType::f32, WeightType::bf16, WeightType::q8_0}) {
    for (int64_t K : {64, 70, 160}) {
      if (t == WeightType::q8_0 && K % 32) continue;
      for (int64_t M : {1, 3, 8, 9, 16, 17, 40}) {  // 17 and 40: the bf16 GEMM's rows padded to 16s
        const int64_t N = 37, ldx = K + 3, ldy = N + 5;
        auto w = random_tensor<float>({N, K}, rng);
        auto x = random_tensor<float>({M, ldx}, rng);
        auto y = random_tensor<float>({M, ldy}, rng);
        const auto p = PackedMatrix::pack(w.data(), N, K, t);
        Tensor<float> stored({N, K});
        p.unpack_rows(0, N, stored.data());
        // Many rows on a bf16 CPU: the product of x and W rounded to bf16, summed in f32.
        const bool bf16_gemm = packed_linear_uses_bf16(p, M);
        EXPECT_EQ(bf16_gemm, t != WeightType::f32 && M > 8 && gemm_bf16_available() && !packed_products_use_int8(t, M));
        std::vector<float> xr(x.data(), x.data() + x.numel());
        if (packed_products_use_int8(t, M)) {  // q8_0 with VNNI or AMX: x as its int8 blocks (kernels/int8_dot.h)
          Int8Rows q;
          quantize_rows_int8(x.data(), M, ldx, K, q, t);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t k = 0; k < K; ++k)
              xr[size_t(m * ldx + k)] = q.scales[size_t(m * K / 32 + k / 32)] * float(q.q[size_t(m * K + k)]);
        }
        if (bf16_gemm) {
          for (auto& v : xr) v = bf16_to_f32(f32_to_bf16(v));
          for (int64_t i = 0; i < stored.numel(); ++i) stored[i] = bf16_to_f32(f32_to_bf16(stored[i]));
        }
        for (bool acc : {false, true}) {
          std::vector<float> got(y.data(), y.data() + y.numel());
          packed_linear(x.data(), M, ldx, p, got.data(), ldy, acc);
          double worst = 0;
          for (int64_t m = 0; m < M; ++m)
            for (int64_t j = 0; j < ldy; ++j) {
              if (j >= N) {
                EXPECT_EQ(got[m * ldy + j], y[m * ldy + j]) << "padding of y is left alone";
                continue;
              }
              double want = acc ? double(y[m * ldy + j]) : 0.0;
              for (int64_t k = 0; k < K; ++k) want += double(xr[size_t(m * ldx + k)]) * stored[j * K + k];
              worst = std::max(worst, std::fabs(got[m * ldy + j] - want) / (1 + std::fabs(want)));
            }
          EXPECT_LT(worst, 2e-5) << weight_type_name(t) << " K " << K << " M " << M << " acc " << acc;
        }
      }
    }
  }
}

// Rounding q8_0 and q4 rows to bf16 (the bf16 GEMM's weights) is exactly bf16 of the f32
// values unpack_rows gives, over more blocks than one task takes, from a row offset, with
// a ragged last task.
TEST(Quant, Bf16UnpackingIsTheRoundedStoredValues) {
  Rng rng(22);
  const int64_t N = 101, K = 1056;  // 33 blocks a row
  auto w = random_tensor<float>({N, K}, rng);
  for (WeightType t : {WeightType::q8_0, WeightType::q4}) {
    const auto p = PackedMatrix::pack(w.data(), N, K, t);
    const int64_t r0 = 3, n = N - 5;
    Tensor<float> values({n, K});
    p.unpack_rows(r0, n, values.data());
    std::vector<uint16_t> halves(static_cast<size_t>(n * K));
    p.unpack_rows_bf16(r0, n, halves.data());
    for (int64_t i = 0; i < n * K; ++i)
      ASSERT_EQ(halves[size_t(i)], f32_to_bf16(values[i]).bits) << weight_type_name(t) << " element " << i;
  }
}

// Where a batch's rows take the int8 kernel (up to 24 rows in blocks of 8 with the vector
// kernel, any number on AMX), each row's result is bit for bit the row's product alone: a
// row is quantized on its own and keeps its own accumulators, whichever block it is in.
TEST(Quant, Int8ProductsOfABatchEqualEachRowAlone) {
  Rng rng(21);
  const int64_t K = 96, N = 50, ldx = K + 4, ldy = N + 3;
  for (WeightType t : {WeightType::q8_0, WeightType::q4}) {
    auto w = random_tensor<float>({N, K}, rng);
    const auto p = PackedMatrix::pack(w.data(), N, K, t);
    for (int64_t M : {3, 12, 17, 24}) {
      if (!packed_products_use_int8(t, M)) continue;  // (q8_0 without VNNI, and no vector kernel)
      auto x = random_tensor<float>({M, ldx}, rng);
      std::vector<float> batch(static_cast<size_t>(M * ldy)), alone(static_cast<size_t>(N));
      packed_linear(x.data(), M, ldx, p, batch.data(), ldy);
      for (int64_t m = 0; m < M; ++m) {
        packed_linear(x.data() + m * ldx, 1, ldx, p, alone.data(), N);
        for (int64_t j = 0; j < N; ++j)
          ASSERT_EQ(batch[size_t(m * ldy + j)], alone[size_t(j)]) << weight_type_name(t) << " M " << M << " row " << m;
      }
    }
  }
}

// packed_linear_bf16_rows rounds q8_0 and q4 weights to bf16 band by band (512 KB: 2048
// rows at K = 128) over each thread's share of the rows: with 9000 rows each share holds
// full bands and a partial one, and the last share ends mid-band. Every row is checked.
TEST(Quant, Bf16RowsOfEveryBandAndShare) {
  if (!gemm_bf16_available()) GTEST_SKIP() << "no bf16 products on this CPU";
  const int64_t K = 128, N = 9000, M = 16;
  Rng rng(9);
  auto w = random_tensor<float>({N, K}, rng);
  auto x = random_tensor<float>({M, K}, rng);
  std::vector<uint16_t> xb(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) xb[size_t(i)] = f32_to_bf16(x[i]).bits;
  for (WeightType t : {WeightType::q8_0, WeightType::q4}) {
    const auto p = PackedMatrix::pack(w.data(), N, K, t);
    std::vector<float> y(size_t(M * N));
    packed_linear_bf16_rows(xb.data(), M, p, 0.0f, y.data(), N);
    std::vector<float> row(static_cast<size_t>(K));
    double worst = 0;
    for (int64_t j = 0; j < N; ++j) {
      p.unpack_rows(j, 1, row.data());
      for (int64_t m = 0; m < M; ++m) {
        double want = 0;
        for (int64_t k = 0; k < K; ++k)
          want += double(bf16_to_f32(bf16{xb[size_t(m * K + k)]})) * bf16_to_f32(f32_to_bf16(row[size_t(k)]));
        worst = std::max(worst, std::fabs(y[size_t(m * N + j)] - want) / (1 + std::fabs(want)));
      }
    }
    EXPECT_LT(worst, 2e-5) << weight_type_name(t);
  }
}

TEST(Quant, RejectsWhatItCannotStore) {
  std::vector<float> w(40, 1.0f);
  EXPECT_THROW(PackedMatrix::pack(w.data(), 1, 40, WeightType::q8_0), Error);  // 40 % 32 != 0
  // A block whose scale f16 cannot hold: 65504 * 127 (q8_0) or 65504 * 8 (q4) and beyond.
  std::vector<float> big(64, 1.0f);
  big[40] = 1e7f;
  expect_error_mentioning([&] { PackedMatrix::pack(big.data(), 2, 32, WeightType::q8_0); },
                          "row 1, columns 0-31 reach 1e+07");
  PackedMatrix::pack(big.data(), 2, 32, WeightType::bf16);  // bf16 holds it
  big[40] = 6e5f;
  PackedMatrix::pack(big.data(), 2, 32, WeightType::q8_0);
  expect_error_mentioning([&] { PackedMatrix::pack(big.data(), 2, 32, WeightType::q4); }, "holds weights up to 524032");
  w[7] = NAN;
  EXPECT_THROW(PackedMatrix::pack(w.data(), 2, 20, WeightType::bf16), Error);
  EXPECT_THROW(parse_weight_type("q4_0"), Error);
  EXPECT_EQ(parse_weight_type("q8_0"), WeightType::q8_0);
}

// A large matrix is scanned on all threads; the error still names the first bad weight.
TEST(Quant, NamesTheFirstNonFiniteWeightOfALargeMatrix) {
  const int64_t R = 1500, K = 1000;
  std::vector<float> w(size_t(R * K), 0.5f);
  w[size_t(1400 * K + 3)] = -INFINITY;
  w[size_t(1234 * K + 567)] = NAN;
  expect_error_mentioning([&] { PackedMatrix::pack(w.data(), R, K, WeightType::f32); }, "at row 1234, column 567");
}
