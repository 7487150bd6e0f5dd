// Panel-packed weights: the layout (exact unpack, zero padding), and panel_linear (packed)
// and panel_matmul (a row-major matrix in place) against the double triple loop over row
// counts that exercise every register-tile height, column counts with a ragged last panel,
// depths spanning several K blocks, strides, accumulation, and one or two threads.
#include "kernels/gemm_panels.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/parallel.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(GemmPanels, PackStoresColumnPanelsAndUnpacksExactly) {
  Rng rng(7);
  const int64_t N = 45, K = 9;  // one full panel and a ragged one of 13 rows
  auto w = random_tensor<float>({N, K}, rng);
  const auto p = PanelMatrix::pack(w.data(), N, K);
  ASSERT_EQ(p.num_panels(), 2);
  EXPECT_EQ(p.bytes(), size_t(2 * K * kPanelWidth * 4));
  // W[32 + 5, 4] lives in panel 1, depth 4, lane 5; lanes past row 44 are zero.
  EXPECT_EQ(p.panels[(1 * K + 4) * kPanelWidth + 5], w[37 * K + 4]);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = N - kPanelWidth; j < kPanelWidth; ++j) EXPECT_EQ(p.panels[(1 * K + k) * kPanelWidth + j], 0.0f);
  Tensor<float> back({7, K});
  p.unpack_rows(30, 7, back.data());
  for (int64_t i = 0; i < 7 * K; ++i) EXPECT_EQ(back[i], w[30 * K + i]);
}


TEST(GemmPanels, LinearMatchesNaiveDoubleOnRaggedShapes) {
  const int saved = max_threads();
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (int64_t M : {1, 2, 5, 12, 13, 25, 52, 530})  // 530: two row chunks of 265
      for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {31, 7}, {33, 300}, {96, 513}, {70, 256}}) {
        if (M == 530 && K > 300) continue;  // keep the test fast; the chunking is covered at K = 300
        Rng rng(uint64_t(M * 100000 + N * 1000 + K));
        const int64_t ldx = K + 3, ldy = N + 2;
        auto w = random_tensor<double>({N, K}, rng);
        auto x = random_tensor<double>({M, ldx}, rng);
        auto y0 = random_tensor<double>({M, ldy}, rng);
        auto wf = cast<float>(w), xf = cast<float>(x);
        const auto p = PanelMatrix::pack(wf.data(), N, K);
        for (bool accumulate : {false, true}) {
          auto yf = cast<float>(y0);
          panel_linear(xf.data(), M, ldx, p, yf.data(), ldy, accumulate);
          const double err = product_error_vs_naive(yf, y0, x, M, K, N, ldx, ldy, accumulate,
                                                    [&](int64_t k, int64_t j) { return w[j * K + k]; });  // B = W^T
          EXPECT_LT(err, 2e-6)
              << "threads=" << threads << " M=" << M << " N=" << N << " K=" << K << " accumulate=" << accumulate;
        }
      }
  }
  set_threads(saved);
}

// panel_matmul reads a row-major B in place, its last panel ragged: y (+)= x B.
TEST(GemmPanels, MatmulInPlaceMatchesNaiveDouble) {
  const int saved = max_threads();
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (int64_t M : {1, 7, 14, 15, 52})
      for (auto [K, N] : {std::pair<int64_t, int64_t>{1, 1}, {9, 31}, {300, 45}, {513, 70}, {64, 96}, {40, 1000},
                          {300, 1000}}) {
        Rng rng(uint64_t(M * 7919 + K * 31 + N));
        // N = 1000 with 16 KB rows takes the slice-copy path (panel_matmul_suits is false),
        // in one pass (K = 40) and in two (K = 300: 256 + 44).
        const int64_t ldx = K + 1, ldb = N == 1000 ? 4096 : N + 3, ldy = N + 2;
        auto b = random_tensor<double>({K, ldb}, rng);
        auto x = random_tensor<double>({M, ldx}, rng);
        auto y0 = random_tensor<double>({M, ldy}, rng);
        auto bf = cast<float>(b), xf = cast<float>(x);
        for (bool accumulate : {false, true}) {
          auto yf = cast<float>(y0);
          panel_matmul(xf.data(), M, ldx, bf.data(), K, N, ldb, yf.data(), ldy, accumulate);
          const double err = product_error_vs_naive(yf, y0, x, M, K, N, ldx, ldy, accumulate,
                                                    [&](int64_t k, int64_t j) { return b[k * ldb + j]; });
          EXPECT_LT(err, 2e-6)
              << "threads=" << threads << " M=" << M << " K=" << K << " N=" << N << " accumulate=" << accumulate;
        }
      }
  }
  set_threads(saved);
}

// panel_matmul_tn: y (+)= A^T B, A stored [K, M] — the experts' weight gradients, whose
// depth K is a token count. Output row counts below and in the threads' row bands (60: four
// bands of 15 rows on two threads) and spanning several row chunks (1100), depths
// below and above one K block, a 16 KB B stride (slices copied only when deep; K = 300
// copies them in two passes), and both
// output walks whatever this machine's L2 would pick.
TEST(GemmPanels, MatmulTransposedAMatchesNaiveDouble) {
  const int saved = max_threads();
  for (int threads : {1, 2}) {
    set_threads(threads);
    for (int64_t M : {1, 13, 40, 60, 1100})
      for (auto [K, N] : {std::pair<int64_t, int64_t>{1, 1}, {9, 31}, {52, 70}, {600, 45}, {100, 1000}, {300, 1000}}) {
        if (M == 1100 && K > 100) continue;  // keep the test fast
        Rng rng(uint64_t(M * 6007 + K * 37 + N));
        // ldy 1008: whole lines per row, so the non-temporal stores of a one-pass,
        // overwriting product (K <= 128) are taken; ragged rows elsewhere store normally.
        const int64_t lda = M + 3, ldb = N == 1000 ? 4096 : N + 1, ldy = N == 1000 ? 1008 : N + 2;
        auto a = random_tensor<double>({K, lda}, rng);
        auto b = random_tensor<double>({K, ldb}, rng);
        auto y0 = random_tensor<double>({M, ldy}, rng);
        auto af = cast<float>(a), bf = cast<float>(b);
        // x[m, k] = A[k, m], laid out [M, K] for the naive reference.
        Tensor<double> x({M, K});
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) x[m * K + k] = a[k * lda + m];
        for (OutputWalk walk : {OutputWalk::automatic, OutputWalk::row_tiles, OutputWalk::panel_groups})
          for (bool accumulate : {false, true}) {
            auto yf = cast<float>(y0);
            panel_matmul_tn(af.data(), lda, M, bf.data(), K, N, ldb, yf.data(), ldy, accumulate, walk);
            const double err = product_error_vs_naive(yf, y0, x, M, K, N, K, ldy, accumulate,
                                                      [&](int64_t k, int64_t j) { return b[k * ldb + j]; });
            EXPECT_LT(err, 2e-6) << "threads=" << threads << " M=" << M << " K=" << K << " N=" << N
                                 << " accumulate=" << accumulate << " walk=" << int(walk);
          }
      }
  }
  set_threads(saved);
}

TEST(GemmPanels, RejectsStridesBelowTheShape) {
  std::vector<float> w(8 * 4, 1.0f), x(4), y(8);
  const auto p = PanelMatrix::pack(w.data(), 8, 4);
  EXPECT_THROW(panel_linear(x.data(), 1, 3, p, y.data(), 8), Error);
  EXPECT_THROW(panel_linear(x.data(), 1, 4, p, y.data(), 7), Error);
  EXPECT_THROW(panel_matmul(x.data(), 1, 4, w.data(), 4, 8, 7, y.data(), 8), Error);  // ldb < N
  EXPECT_THROW(panel_matmul_tn(w.data(), 0, 1, w.data(), 4, 8, 8, y.data(), 8), Error);  // lda < M
}

// Row strides whose panel slices pile onto a few L2 sets are left to the general GEMM.
TEST(GemmPanels, MatmulSuitsStridesThatSpreadOverTheCache) {
  // A row-major slice is 128 rows of two lines: 256 lines to hold.
  EXPECT_TRUE(panel_matmul_suits(1536));   // 6 KB rows: 64 sets x 16 ways
  EXPECT_TRUE(panel_matmul_suits(256));    // 1 KB rows: 128 sets
  EXPECT_TRUE(panel_matmul_suits(1000));   // rows not line aligned
  EXPECT_TRUE(panel_matmul_suits(1024));   // 4 KB rows: 32 sets, 512 lines
  EXPECT_FALSE(panel_matmul_suits(4096));  // 16 KB rows: 8 sets, 128 lines
  EXPECT_FALSE(panel_matmul_suits(8192));  // 32 KB rows: 4 sets
}
