// The int8 GEMM (kernels/int8_gemm.h) on q8_0 and q4 weights against a naive double
// implementation of the same quantized arithmetic (integer block sums exact, the scales
// applied in double), for row counts around its tile of 6 rows, weight rows around its
// groups of 16, pairs of 32 and bands of 64 (and threads' shares of bands), odd block
// counts, strides and accumulation; each row's result bit for bit the same whatever rows
// share its call. Skipped where the build has no AVX-512 VNNI.
#include "kernels/int8_gemm.h"

#include "core/parallel.h"
#include "int8_reference.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

void gemm_product(const float* x, int64_t M, int64_t ldx, const PackedMatrix& p, float* y, int64_t ldy, bool acc) {
  Int8Rows q;
  quantize_rows_int8(x, M, ldx, p.cols, q, p.type);
  int8_gemm(q, p, y, ldy, acc);
}

}  // namespace

TEST(Int8Gemm, BlockBiasIsMinusTheOffsetTimesTheBlockSum) {
  Rng rng(41);
  const int64_t M = 3, K = 96;
  auto x = random_tensor<float>({M, K}, rng, 2.0);
  for (WeightType type : {WeightType::q4, WeightType::q8_0}) {
    Int8Rows q;
    quantize_rows_int8(x.data(), M, K, K, q, type);
    const int32_t offset = type == WeightType::q4 ? 8 : 128;
    ASSERT_EQ(q.block_bias.size(), size_t(M * K / 32));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t b = 0; b < K / 32; ++b) {
        int32_t sum = 0;
        for (int64_t i = 0; i < 32; ++i) sum += q.q[size_t(m * K + b * 32 + i)];
        EXPECT_EQ(q.block_bias[size_t(m * K / 32 + b)], -offset * sum) << m << " " << b;
        for (int64_t l = 0; l < 8; ++l) {
          const int64_t at = m * K + b * 32 + 4 * l;
          EXPECT_EQ(q.lane_bias[size_t(at / 4)], -offset * (q.q[size_t(at)] + q.q[size_t(at + 1)] +
                                                            q.q[size_t(at + 2)] + q.q[size_t(at + 3)]));
          EXPECT_EQ(q.lane_scales[size_t(at / 4)], q.scales[size_t(m * K / 32 + b)]);
        }
      }
  }
}

TEST(Int8Gemm, ProductIsTheInt8ArithmeticAndBatchInvariant) {
  if (!int8_gemm_available()) GTEST_SKIP() << "this build has no AVX-512 VNNI";
  Rng rng(42);
  for (WeightType type : {WeightType::q4, WeightType::q8_0})
    for (int64_t K : {32, 96, 1024})
      for (int64_t N : {16, 37, 64, 100, 300}) {
        const int64_t Mmax = 40, ldx = K + 3, ldy = N + 5;
        auto w = random_tensor<float>({N, K}, rng);
        auto x = random_tensor<float>({Mmax, ldx}, rng);
        const auto p = PackedMatrix::pack(w.data(), N, K, type);
        std::vector<float> alone(size_t(Mmax * ldy));  // each row multiplied on its own
        for (int64_t m = 0; m < Mmax; ++m) gemm_product(x.data() + m * ldx, 1, ldx, p, alone.data() + m * ldy, ldy, false);
        for (int64_t M : {1, 5, 6, 7, 13, 40})
          for (bool acc : {false, true}) {
            auto y = random_tensor<float>({M, ldy}, rng);
            std::vector<float> got(y.data(), y.data() + y.numel());
            gemm_product(x.data(), M, ldx, p, got.data(), ldy, acc);
            Int8Rows q;
            quantize_rows_int8(x.data(), M, ldx, K, q, type);
            const double worst = int8_product_error(q, p, got.data(), y.data(), alone.data(), M, ldy, acc);
            EXPECT_LT(worst, 1e-5) << weight_type_name(type) << " K " << K << " N " << N << " M " << M << " acc " << acc;
          }
      }
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
