#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
// Checks gemm<T> for one transpose pair against the double triple loop, alpha/beta included.
template <typename T>
void check_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double tol) {
  Rng rng(uint64_t(M * 131 + N * 17 + K + ta * 3 + tb * 5));
  auto A = random_tensor<double>(ta ? Shape{K, M} : Shape{M, K}, rng);
  auto B = random_tensor<double>(tb ? Shape{N, K} : Shape{K, N}, rng);
  auto C0 = random_tensor<double>({M, N}, rng);
  Tensor<double> AB({M, N});
  naive_gemm(ta, tb, M, N, K, A.data(), B.data(), AB.data());
  const double alpha = 0.75, beta = -0.5;
  Tensor<double> want({M, N});
  for (int64_t i = 0; i < M * N; ++i) want[i] = alpha * AB[i] + beta * C0[i];
  auto At = cast<T>(A), Bt = cast<T>(B), C = cast<T>(C0);
  gemm<T>(ta ? Trans::T : Trans::N, tb ? Trans::T : Trans::N, M, N, K, T(alpha), At.data(),
          ta ? M : K, Bt.data(), tb ? K : N, T(beta), C.data(), N);
  EXPECT_LT(rel_error(C, want), tol) << "ta=" << ta << " tb=" << tb << " " << M << "x" << N << "x" << K;
}
}  // namespace

TEST(Gemm, AllTransposesMatchNaiveDouble) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::tuple{1, 1, 1}, {7, 5, 3}, {33, 65, 17}, {128, 96, 200}}) {
        check_gemm<double>(ta, tb, M, N, K, 1e-13);
        check_gemm<float>(ta, tb, M, N, K, 1e-5);
      }
}

TEST(Gemm, BetaZeroIgnoresNaNInOutputAndKZeroScales) {
  Tensor<float> A({2, 3}), B({3, 2}), C({2, 2});
  for (int i = 0; i < 6; ++i) A[i] = B[i] = float(i);
  for (int i = 0; i < 4; ++i) C[i] = NAN;
  gemm<float>(Trans::N, Trans::N, 2, 2, 3, 1.0f, A.data(), 3, B.data(), 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C[0], 0 * 0 + 1 * 2 + 2 * 4);
  EXPECT_EQ(C[3], 3 * 1 + 4 * 3 + 5 * 5);
  gemm<float>(Trans::N, Trans::N, 2, 2, 0, 1.0f, A.data(), 1, B.data(), 2, 2.0f, C.data(), 2);
  EXPECT_EQ(C[0], 20.0f);
}

TEST(Gemm, GroupedEqualsOneByOne) {
  Rng rng(3);
  const int64_t K = 24, N = 40;
  auto W = random_tensor<float>({N, K}, rng);
  std::vector<int64_t> rows = {5, 0, 13, 1};
  int64_t total = 0;
  for (auto r : rows) total += r;
  auto X = random_tensor<float>({total, K}, rng);
  Tensor<float> grouped({total, N}), single({total, N});
  std::vector<GemmProblem<float>> problems;
  int64_t r0 = 0;
  for (auto r : rows) {
    problems.push_back({r, N, K, X.data() + r0 * K, K, W.data(), K, grouped.data() + r0 * N, N, 0.0f});
    gemm<float>(Trans::N, Trans::T, r, N, K, 1.0f, X.data() + r0 * K, K, W.data(), K, 0.0f,
                single.data() + r0 * N, N);
    r0 += r;
  }
  gemm_grouped<float>(Trans::N, Trans::T, problems);
  for (int64_t i = 0; i < grouped.numel(); ++i) EXPECT_EQ(grouped[i], single[i]);
}

// The NN form of the experts' backward, where gemm_grouped hands problems of 8 rows or
// more to the panel kernel: every problem against the double triple loop, with beta 0
// and 1, row counts on both sides of the switch, and weights whose rows are 4 KB apart
// (read in place) and 16 KB apart (slices copied: rows alias in the cache).
TEST(Gemm, GroupedNNMatchesNaiveDouble) {
  Rng rng(4);
  for (int64_t N : {40, 1024, 4096}) {
    const int64_t K = 300;
    auto W = random_tensor<double>({K, N}, rng);
    auto Wf = cast<float>(W);
    const std::vector<int64_t> rows = {5, 0, 8, 45};
    int64_t total = 0;
    for (auto r : rows) total += r;
    auto X = random_tensor<double>({total, K}, rng);
    auto C0 = random_tensor<double>({total, N}, rng);
    auto Xf = cast<float>(X);
    for (float beta : {0.0f, 1.0f}) {
      auto C = cast<float>(C0);
      std::vector<GemmProblem<float>> problems;
      int64_t r0 = 0;
      for (auto r : rows) {
        problems.push_back({r, N, K, Xf.data() + r0 * K, K, Wf.data(), N, C.data() + r0 * N, N, beta});
        r0 += r;
      }
      gemm_grouped<float>(Trans::N, Trans::N, problems);
      Tensor<double> XW({total, N}), want({total, N});
      naive_gemm(false, false, total, N, K, X.data(), W.data(), XW.data());
      for (int64_t i = 0; i < total * N; ++i) want[i] = XW[i] + beta * C0[i];
      EXPECT_LT(rel_error(C, want), 2e-6) << "N=" << N << " beta=" << beta;
    }
  }
}

// The experts' weight gradients: dW (+)= dY^T X per expert, each over its own rows. Depth 3
// takes the panel kernel; 52 and 600 take OpenBLAS per thread where it is built in (the
// panel kernel and the provider otherwise).
TEST(Gemm, GroupedTNMatchesNaiveDouble) {
  Rng rng(5);
  for (int64_t K : {3, 52, 600}) {
    const int64_t M = 70, N = 45;
    for (float beta : {0.0f, 1.0f}) {
      std::vector<Tensor<double>> A, B, C0;
      std::vector<Tensor<float>> Af, Bf, C;
      std::vector<GemmProblem<float>> problems;
      for (int e = 0; e < 3; ++e) {
        A.push_back(random_tensor<double>({K, M}, rng));
        B.push_back(random_tensor<double>({K, N}, rng));
        C0.push_back(random_tensor<double>({M, N}, rng));
        Af.push_back(cast<float>(A.back()));
        Bf.push_back(cast<float>(B.back()));
        C.push_back(cast<float>(C0.back()));
      }
      for (int e = 0; e < 3; ++e)
        problems.push_back({M, N, K, Af[size_t(e)].data(), M, Bf[size_t(e)].data(), N, C[size_t(e)].data(), N, beta});
      gemm_grouped<float>(Trans::T, Trans::N, problems);
      for (size_t e = 0; e < 3; ++e) {
        Tensor<double> AB({M, N}), want({M, N});
        naive_gemm(true, false, M, N, K, A[e].data(), B[e].data(), AB.data());
        for (int64_t i = 0; i < M * N; ++i) want[i] = AB[i] + beta * C0[e][i];
        EXPECT_LT(rel_error(C[e], want), 2e-6) << "K=" << K << " beta=" << beta << " expert " << e;
      }
    }
  }
}

// OpenBLAS on each OpenMP thread, a band of C's rows each: every transpose pair, row counts
// that split unevenly or not at all (under 16 rows one thread runs), alpha and beta, and
// strides past the shapes. It declines (false) only when the CBLAS is not OpenBLAS.
TEST(Gemm, CblasPerThreadMatchesNaiveDouble) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{5, 7, 3}, {37, 20, 52}, {150, 33, 9}}) {
        Rng rng(uint64_t(M * 7 + N * 11 + K + ta * 2 + tb * 4));
        const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 3, ldc = N + 1;
        auto A = random_tensor<double>({ta ? K : M, lda}, rng);
        auto B = random_tensor<double>({tb ? N : K, ldb}, rng);
        auto C0 = random_tensor<double>({M, ldc}, rng);
        const double alpha = 0.5, beta = 1.0;
        auto want = cast<double>(C0);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double dot = 0;
            for (int64_t k = 0; k < K; ++k)
              dot += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            want[i * ldc + j] = alpha * dot + beta * C0[i * ldc + j];
          }
        auto Af = cast<float>(A), Bf = cast<float>(B), C = cast<float>(C0);
        if (!gemm_f32_cblas_per_thread(ta ? Trans::T : Trans::N, tb ? Trans::T : Trans::N, M, N, K, float(alpha),
                                       Af.data(), lda, Bf.data(), ldb, float(beta), C.data(), ldc))
          GTEST_SKIP() << "the CBLAS built in is not OpenBLAS";
        EXPECT_LT(rel_error(C, want), 2e-6) << "ta=" << ta << " tb=" << tb << " " << M << "x" << N << "x" << K;
      }
}

// The routing of the experts' products follows the thresholds measured in bench/gemm
// (docs/decisions.md): the training forward at 16-96 rows streams the weight; the backward's
// NN products take panels up to 128 rows when W's rows alias (16 KB apart), at any row
// count otherwise; the weight gradients take panels up to 40 tokens, then OpenBLAS per
// thread (without it: panels up to 1024, the provider beyond).
TEST(Gemm, GroupedRoutingFollowsTheMeasuredThresholds) {
  auto route = [](Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t ldb) {
    return gemm_grouped_route(ta, tb, M, N, K, ldb, 1.0f);
  };
#if defined(__AVX512F__)
  EXPECT_EQ(route(Trans::N, Trans::T, 52, 8192, 1536, 1536), GemmRoute::stream);
  EXPECT_EQ(route(Trans::N, Trans::T, 8, 8192, 1536, 1536), GemmRoute::small);
#endif
  EXPECT_EQ(route(Trans::N, Trans::T, 256, 8192, 1536, 1536), GemmRoute::provider);
  EXPECT_EQ(route(Trans::N, Trans::N, 52, 4096, 1536, 4096), GemmRoute::panels);
  EXPECT_EQ(route(Trans::N, Trans::N, 128, 4096, 1536, 4096), GemmRoute::panels);
  EXPECT_EQ(route(Trans::N, Trans::N, 129, 4096, 1536, 4096), GemmRoute::provider);
  EXPECT_EQ(route(Trans::N, Trans::N, 256, 4096, 1536, 4096), GemmRoute::provider);
  EXPECT_EQ(route(Trans::N, Trans::N, 256, 1536, 8192, 1536), GemmRoute::panels);
  EXPECT_EQ(route(Trans::T, Trans::N, 8192, 1536, 32, 1536), GemmRoute::panels_tn);
  const bool blas = gemm_cblas_per_thread_available() && gemm_cblas_has_avx512_kernels();
  EXPECT_EQ(route(Trans::T, Trans::N, 8192, 1536, 52, 1536), blas ? GemmRoute::cblas_per_thread : GemmRoute::panels_tn);
  EXPECT_EQ(route(Trans::T, Trans::N, 8192, 1536, 256, 1536), blas ? GemmRoute::cblas_per_thread : GemmRoute::panels_tn);
  EXPECT_EQ(route(Trans::T, Trans::N, 8192, 1536, 2048, 1536), blas ? GemmRoute::cblas_per_thread : GemmRoute::provider);
  // Only beta 0 or 1 takes the special kernels.
  EXPECT_EQ(gemm_grouped_route(Trans::T, Trans::N, 8192, 1536, 32, 1536, 0.5f), GemmRoute::provider);
}

TEST(Gemm, RejectsBadLeadingDimensions) {
  Tensor<float> A({4, 4}), B({4, 4}), C({4, 4});
  EXPECT_THROW(gemm<float>(Trans::N, Trans::N, 4, 4, 4, 1.0f, A.data(), 3, B.data(), 4, 0.0f, C.data(), 4), Error);
  EXPECT_THROW(gemm<float>(Trans::N, Trans::N, -1, 4, 4, 1.0f, A.data(), 4, B.data(), 4, 0.0f, C.data(), 4), Error);
}
