// AMX int8 products (kernels/amx_int8.h): the tile layout of quantized x against the
// library's int8 quantization (exact), and the products on q8_0 and q4 weights against a
// naive double implementation of the same quantized arithmetic (integer block sums exact,
// the scales applied in double), for row counts below, at and past a tile of 16, weight
// rows past a band of 16, odd block counts, strides and accumulation; each row's result
// bit for bit the same whatever rows share its call (batch invariance). Skipped where the
// CPU or the kernel offers no AMX-INT8.
#include "kernels/amx_int8.h"

#include "int8_reference.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

void amx_product(const float* x, int64_t M, int64_t ldx, const PackedMatrix& p, float* y, int64_t ldy, bool acc) {
  TileRows t;
  quantize_rows_for_tiles(x, M, ldx, p.cols, t);
  // In two calls with a split that is not a band boundary: a call's range may start anywhere.
  const int64_t split = std::min<int64_t>(p.rows, 21);
  amx_int8_linear(t, p, 0, split, y, ldy, acc);
  amx_int8_linear(t, p, split, p.rows, y, ldy, acc);
}

}  // namespace

TEST(AmxInt8, TilesHoldTheInt8QuantizationOfEachRow) {
  Rng rng(31);
  const int64_t M = 19, K = 96, ldx = 101;
  auto x = random_tensor<float>({M, ldx}, rng, 2.0);
  for (int64_t k = 32; k < 64; ++k) x[3 * ldx + k] = 0;  // a zero block
  TileRows t;
  quantize_rows_for_tiles(x.data(), M, ldx, K, t);
  Int8Rows q;
  quantize_rows_int8(x.data(), M, ldx, K, q, WeightType::q8_0);
  const int64_t blocks = K / 32, groups = 2;
  ASSERT_EQ(t.rows, M);
  ASSERT_EQ(t.tiles.size(), size_t(groups * blocks * 512));
  ASSERT_EQ(t.scales.size(), size_t(groups * blocks * 16));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t lane = 0; lane < 16; ++lane) {
        const int64_t m = g * 16 + lane;
        const float d = t.scales[size_t((g * blocks + b) * 16 + lane)];
        EXPECT_EQ(d, m < M ? q.scales[size_t(m * blocks + b)] : 0.0f) << m << " " << b;
        for (int64_t r = 0; r < 8; ++r)
          for (int64_t i = 0; i < 4; ++i) {
            const int8_t v = t.tiles[size_t((g * blocks + b) * 512 + r * 64 + 4 * lane + i)];
            EXPECT_EQ(v, m < M ? q.q[size_t(m * K + b * 32 + 4 * r + i)] : 0) << m << " " << b << " " << r << " " << i;
          }
      }
  EXPECT_EQ(t.scales[size_t((0 * blocks + 1) * 16 + 3)], 0.0f);
}

TEST(AmxInt8, ProductIsTheInt8ArithmeticAndBatchInvariant) {
  if (!amx_int8_available()) GTEST_SKIP() << "no AMX-INT8 on this CPU or kernel";
  Rng rng(32);
  for (WeightType type : {WeightType::q4, WeightType::q8_0})
    for (int64_t K : {32, 96, 160, 1024})
      for (int64_t N : {16, 37})
        expect_int8_products(amx_product, type, K, N, 40, {1, 5, 16, 17, 40}, rng);
}

// packed_linear hands q8_0 products of 5 rows and more, and q4 ones of 7 and more, to the
// tiles where it can: the same results as the kernel called directly.
TEST(AmxInt8, PackedLinearUsesTheTilesFromAFewRows) {
  if (!amx_int8_available()) GTEST_SKIP() << "no AMX-INT8 on this CPU or kernel";
  Rng rng(33);
  const int64_t N = 40, K = 128;
  auto w = random_tensor<float>({N, K}, rng);
  for (WeightType type : {WeightType::q4, WeightType::q8_0}) {
    const auto p = PackedMatrix::pack(w.data(), N, K, type);
    for (int64_t M : {4, 5, 6, 7, 9, 64}) {
      auto x = random_tensor<float>({M, K}, rng);
      const bool tiles = packed_products_use_amx(type, M);
      EXPECT_EQ(tiles, M >= (type == WeightType::q4 ? 7 : 5)) << weight_type_name(type) << " M " << M;
      EXPECT_TRUE(packed_products_use_int8(type, M));
      EXPECT_FALSE(packed_linear_uses_bf16(p, M));
      if (!tiles) continue;
      std::vector<float> got(size_t(M * N)), want(size_t(M * N));
      packed_linear(x.data(), M, K, p, got.data(), N);
      amx_product(x.data(), M, K, p, want.data(), N, false);
      EXPECT_EQ(got, want) << weight_type_name(type) << " M " << M;
    }
  }
}
