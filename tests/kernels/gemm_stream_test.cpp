// stream_linear (y (+)= x W^T, W read in place) against the double triple loop: row counts
// that take only dot products (< 5), a padded vector, whole vectors, vectors plus
// dot-product rows, one and several 64-row blocks; a ragged last tile of W rows; depths with a ragged last 16; strides
// past the shape; accumulation; one or two threads. Then the routing through gemm<float>.
#include "kernels/gemm_stream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/parallel.h"
#include "kernels/gemm.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

// y0 (+)= x W^T in double against the f32 result y, W [N, K] with row stride ldw.
double error_vs_naive(const Tensor<float>& y, const Tensor<double>& y0, const Tensor<double>& x,
                      const Tensor<double>& w, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldw,
                      int64_t ldy, bool accumulate) {
  return product_error_vs_naive(y, y0, x, M, K, N, ldx, ldy, accumulate,
                                [&](int64_t k, int64_t j) { return w[j * ldw + k]; });
}

}  // namespace

TEST(GemmStream, LinearMatchesNaiveDoubleOnRaggedShapes) {
  const int saved = max_threads();
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (int64_t M : {1, 4, 5, 15, 16, 17, 35, 44, 48, 52, 64, 65, 100, 131})
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {7, 16}, {13, 33}, {50, 100}, {9, 300}}) {
        Rng rng(uint64_t(M * 100000 + N * 1000 + K));
        const int64_t ldx = K + 3, ldw = K + 5, ldy = N + 2;
        auto w = random_tensor<double>({N, ldw}, rng);
        auto x = random_tensor<double>({M, ldx}, rng);
        auto y0 = random_tensor<double>({M, ldy}, rng);
        auto wf = cast<float>(w), xf = cast<float>(x);
        // One pass over K, and (copies of at most 4 KB) several, the last one ragged.
        for (int64_t max_copy : {int64_t(0), int64_t(4096)})
          for (bool accumulate : {false, true}) {
            auto yf = cast<float>(y0);
            stream_linear(xf.data(), M, ldx, wf.data(), N, K, ldw, yf.data(), ldy, accumulate, max_copy);
            const double err = error_vs_naive(yf, y0, x, w, M, N, K, ldx, ldw, ldy, accumulate);
            EXPECT_LT(err, 2e-6) << "threads=" << threads << " M=" << M << " N=" << N << " K=" << K
                                 << " accumulate=" << accumulate << " max_copy=" << max_copy;
          }
      }
  }
  set_threads(saved);
}

TEST(GemmStream, OverwriteIgnoresNaNInOutputAndStridesAreChecked) {
  Rng rng(3);
  const int64_t M = 20, N = 10, K = 24;
  auto w = random_tensor<double>({N, K}, rng);
  auto x = random_tensor<double>({M, K}, rng);
  auto wf = cast<float>(w), xf = cast<float>(x);
  Tensor<float> y({M, N});
  for (int64_t i = 0; i < y.numel(); ++i) y[i] = std::numeric_limits<float>::quiet_NaN();
  stream_linear(xf.data(), M, K, wf.data(), N, K, K, y.data(), N, false);
  Tensor<double> zeros({M, N});
  EXPECT_LT(error_vs_naive(y, zeros, x, w, M, N, K, K, K, N, false), 2e-6);
  EXPECT_THROW(stream_linear(xf.data(), M, K - 1, wf.data(), N, K, K, y.data(), N), Error);
  EXPECT_THROW(stream_linear(xf.data(), M, K, wf.data(), N, K, K - 1, y.data(), N), Error);
  EXPECT_THROW(stream_linear(xf.data(), M, K, wf.data(), N, K, K, y.data(), N - 1), Error);
}

// gemm<float> sends NT products of 16-96 rows here when the transposed copy of x fits
// 1 MB: the up projection (K = 1536) up to 96 rows, the down projection (K = 4096) up to 68.
TEST(GemmStream, SuitsExpertRowCountsWhoseCopyFitsL2) {
#if defined(__AVX512F__)
  EXPECT_FALSE(stream_linear_suits(15, 1536));
  EXPECT_TRUE(stream_linear_suits(16, 1536));
  EXPECT_TRUE(stream_linear_suits(52, 1536));
  EXPECT_TRUE(stream_linear_suits(96, 1536));
  EXPECT_FALSE(stream_linear_suits(97, 1536));
  EXPECT_TRUE(stream_linear_suits(64, 4096));
  EXPECT_TRUE(stream_linear_suits(68, 4096));   // 64 rows in vectors (1 MB), 4 by dot products
  EXPECT_FALSE(stream_linear_suits(69, 4096));  // 80 rows in vectors: 1.25 MB
#else
  EXPECT_FALSE(stream_linear_suits(52, 1536));
#endif
}

TEST(GemmStream, GemmRoutesExpertSizedNTProductsHereAndMatches) {
  Rng rng(11);
  const int64_t M = 52, N = 70, K = 200;
  auto w = random_tensor<double>({N, K}, rng);
  auto x = random_tensor<double>({M, K}, rng);
  auto y0 = random_tensor<double>({M, N}, rng);
  auto wf = cast<float>(w), xf = cast<float>(x);
  for (float beta : {0.0f, 1.0f}) {
    auto via_gemm = cast<float>(y0), direct = cast<float>(y0);
    gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, xf.data(), K, wf.data(), K, beta, via_gemm.data(), N);
    stream_linear(xf.data(), M, K, wf.data(), N, K, K, direct.data(), N, beta == 1.0f);
    EXPECT_LT(error_vs_naive(via_gemm, y0, x, w, M, N, K, K, K, N, beta == 1.0f), 2e-6) << "beta=" << beta;
#if defined(__AVX512F__)
    for (int64_t i = 0; i < M * N; ++i) ASSERT_EQ(via_gemm[i], direct[i]) << "beta=" << beta << " at " << i;
#endif
  }
}
