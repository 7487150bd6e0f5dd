// The int8 GEMM (kernels/int8_gemm.h) on q8_0 and q4 weights against a naive double
// implementation of the same quantized arithmetic (integer block sums exact, the scales
// applied in double), for row counts around its groups of 16 and tiles of 32 rows of x,
// weight rows around its tiles of 6 and bands of 60 (and threads' shares of rows), odd
// block counts, strides and accumulation; each row's result bit for bit the same whatever
// rows share its call. Skipped where the build has no AVX-512 VNNI.
#include "kernels/int8_gemm.h"

#include "core/parallel.h"
#include "kernels/swiglu.h"
#include "int8_reference.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

void gemm_product(const float* x, int64_t M, int64_t ldx, const PackedMatrix& p, float* y, int64_t ldy, bool acc) {
  TileRows t;
  quantize_rows_for_tiles(x, M, ldx, p.cols, t);
  int8_gemm(t, p, y, ldy, acc);
}

}  // namespace

// The tiles hold each row's blocks exactly as quantize_rows_int8 quantizes them (codes,
// scales and the codes' sums, the GEMM's offset correction), 4 codes of each of 16 rows a
// 64-byte tile row; rows past M are zero. A zero row and a row of large values included.
TEST(Int8Gemm, TilesHoldEachRowsQuantizedBlocks) {
  Rng rng(41);
  for (int64_t M : {1, 5, 16, 19, 40}) {
    const int64_t K = 96, ldx = 100, blocks = K / 32, groups = (M + 15) / 16;
    auto x = random_tensor<float>({M, ldx}, rng, 2.0);
    for (int64_t k = 0; k < ldx; ++k) x[size_t(k)] = 0.0f;
    if (M > 2)
      for (int64_t k = 0; k < ldx; ++k) x[size_t(2 * ldx + k)] *= 1e4f;
    TileRows t;
    quantize_rows_for_tiles(x.data(), M, ldx, K, t);
    Int8Rows q;
    quantize_rows_int8(x.data(), M, ldx, K, q, WeightType::q8_0);
    ASSERT_EQ(t.tiles.size(), size_t(groups * blocks * TileRows::kTileBytes));
    ASSERT_EQ(t.sums.size(), size_t(groups * blocks * 16));
    ASSERT_EQ(t.scales.size(), size_t(groups * blocks * 16));
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t b = 0; b < blocks; ++b)
        for (int64_t lane = 0; lane < 16; ++lane) {
          const int64_t m = g * 16 + lane, tile = g * blocks + b;
          int32_t want = 0;
          for (int64_t i = 0; i < 32; ++i) {
            const int8_t code = m < M ? q.q[size_t(m * K + b * 32 + i)] : int8_t(0);
            want += code;
            ASSERT_EQ(t.tiles[size_t(tile * TileRows::kTileBytes + 64 * (i / 4) + 4 * lane + i % 4)], code)
                << "M " << M << " row " << m << " block " << b << " value " << i;
          }
          EXPECT_EQ(t.sums[size_t(tile * 16 + lane)], want) << m << " " << b;
          EXPECT_EQ(t.scales[size_t(tile * 16 + lane)], m < M ? q.scales[size_t(m * blocks + b)] : 0.0f) << m << " " << b;
        }
  }
}

TEST(Int8Gemm, ProductIsTheInt8ArithmeticAndBatchInvariant) {
  if (!int8_gemm_available()) GTEST_SKIP() << "this build has no AVX-512 VNNI";
  Rng rng(42);
  for (WeightType type : {WeightType::q4, WeightType::q8_0})
    for (int64_t K : {32, 96, 1024})
      for (int64_t N : {16, 37, 64, 100, 130, 300})
        expect_int8_products(gemm_product, type, K, N, 40, {1, 5, 16, 17, 33, 40}, rng);
}

// Threads split the weight rows by bands; one thread or several give the same bits.
TEST(Int8Gemm, ResultDoesNotDependOnTheThreads) {
  if (!int8_gemm_available()) GTEST_SKIP() << "this build has no AVX-512 VNNI";
  Rng rng(43);
  const int64_t M = 30, N = 333, K = 128;
  auto w = random_tensor<float>({N, K}, rng);
  auto x = random_tensor<float>({M, K}, rng);
  const auto p = PackedMatrix::pack(w.data(), N, K, WeightType::q4);
  std::vector<float> many(size_t(M * N)), one(size_t(M * N));
  gemm_product(x.data(), M, K, p, many.data(), N, false);
  const int threads = max_threads();
  set_threads(1);
  gemm_product(x.data(), M, K, p, one.data(), N, false);
  set_threads(threads);
  EXPECT_EQ(many, one);
}

// packed_linear hands q8_0 and q4 products of more than 24 rows to the int8 GEMM where the
// CPU has VNNI and no AMX: the same results as the kernel called directly.
TEST(Int8Gemm, PackedLinearUsesItBeyond24Rows) {
  if (!int8_gemm_available()) GTEST_SKIP() << "this build has no AVX-512 VNNI";
  Rng rng(44);
  const int64_t N = 40, K = 128;
  auto w = random_tensor<float>({N, K}, rng);
  for (WeightType type : {WeightType::q4, WeightType::q8_0}) {
    const auto p = PackedMatrix::pack(w.data(), N, K, type);
    for (int64_t M : {25, 64}) {
      if (packed_products_use_amx(type, M)) continue;  // AMX takes these (amx_int8_test)
      auto x = random_tensor<float>({M, K}, rng);
      EXPECT_TRUE(packed_products_use_int8(type, M));
      EXPECT_FALSE(packed_linear_uses_bf16(p, M));
      std::vector<float> got(size_t(M * N)), want(size_t(M * N));
      packed_linear(x.data(), M, K, p, got.data(), N);
      gemm_product(x.data(), M, K, p, want.data(), N, false);
      EXPECT_EQ(got, want) << weight_type_name(type) << " M " << M;
    }
  }
}

// An FFN expert's hidden rows quantized straight from its up projection u = [a | b] are the
// tiles of swiglu_forward(u), bit for bit, and packed_linear_tiles on them is packed_linear
// on the hidden rows (the path ffn_experts_forward takes for packed experts on int8 tiles).
TEST(Int8Gemm, SwigluTilesAreTheTilesOfTheHiddenRows) {
  Rng rng(45);
  for (int64_t I : {32, 96})
    for (int64_t M : {1, 17, 40}) {
      auto u = random_tensor<float>({M, 2 * I}, rng, 3.0);
      std::vector<float> h(size_t(M * I));
      swiglu_forward(u.data(), h.data(), M, I);
      TileRows fused, want;
      quantize_swiglu_rows_for_tiles(u.data(), M, I, fused);
      quantize_rows_for_tiles(h.data(), M, I, I, want);
      EXPECT_EQ(fused.rows, M);
      EXPECT_EQ(fused.cols, I);
      EXPECT_EQ(fused.tiles, want.tiles) << "I " << I << " M " << M;
      EXPECT_EQ(fused.scales, want.scales) << "I " << I << " M " << M;
      EXPECT_EQ(fused.sums, want.sums) << "I " << I << " M " << M;
      const int64_t N = 24;
      auto w = random_tensor<float>({N, I}, rng);
      for (WeightType type : {WeightType::q4, WeightType::q8_0}) {
        const auto p = PackedMatrix::pack(w.data(), N, I, type);
        if (!packed_linear_uses_tiles(p, M)) continue;
        std::vector<float> got(size_t(M * N)), expect(size_t(M * N));
        packed_linear_tiles(fused, p, got.data(), N);
        packed_linear(h.data(), M, I, p, expect.data(), N);
        EXPECT_EQ(got, expect) << weight_type_name(type) << " I " << I << " M " << M;
      }
    }
}
