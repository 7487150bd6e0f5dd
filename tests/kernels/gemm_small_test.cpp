#include "kernels/gemm_small.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

// The few-row kernel against the double triple loop: ragged M, N and K (tails of every
// tile and of the vector width), alpha/beta, and a C with a wider row stride.
TEST(GemmSmall, MatchesNaiveDoubleOnRaggedShapes) {
  for (bool tb : {true})
    for (int64_t M : {1, 3, 4, 7, 13, 29, 32})
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {5, 17}, {33, 16}, {70, 45}, {129, 300}}) {
        Rng rng(uint64_t(M * 1000 + N * 10 + K));
        auto A = random_tensor<double>({M, K}, rng);
        auto B = random_tensor<double>(tb ? Shape{N, K} : Shape{K, N}, rng);
        const int64_t ldc = N + 3;
        auto C0 = random_tensor<double>({M, ldc}, rng);
        Tensor<double> AB({M, N});
        naive_gemm(false, tb, M, N, K, A.data(), B.data(), AB.data());
        auto Af = cast<float>(A), Bf = cast<float>(B), Cf = cast<float>(C0);
        const bool handled = gemm_small_f32(Trans::N, tb ? Trans::T : Trans::N, M, N, K, 0.5f, Af.data(), K, Bf.data(),
                                            tb ? K : N, -1.25f, Cf.data(), ldc);
#if defined(__AVX512F__)
        ASSERT_TRUE(handled);
#else
        if (!handled) GTEST_SKIP() << "built without AVX-512: the small kernels are not compiled in";
#endif
        double num = 0, den = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const double want = j < N ? 0.5 * AB[i * N + j] - 1.25 * C0[i * ldc + j] : C0[i * ldc + j];
            num += (Cf[i * ldc + j] - want) * (Cf[i * ldc + j] - want);
            den += want * want;
          }
        EXPECT_LT(std::sqrt(num / den), 2e-6) << "tb=" << tb << " M=" << M << " N=" << N << " K=" << K;
      }
}

TEST(GemmSmall, DeclinesOtherLayoutsAndLargeM) {
  float x = 0;
  EXPECT_FALSE(gemm_small_f32(Trans::T, Trans::T, 2, 2, 2, 1, &x, 2, &x, 2, 0, &x, 2));
  EXPECT_FALSE(gemm_small_f32(Trans::N, Trans::N, 2, 2, 2, 1, &x, 2, &x, 2, 0, &x, 2));
  EXPECT_FALSE(gemm_small_f32(Trans::N, Trans::T, kSmallGemmMaxRows + 1, 2, 2, 1, &x, 2, &x, 2, 0, &x, 2));
}
