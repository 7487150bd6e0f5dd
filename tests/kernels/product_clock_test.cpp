// The product clock's accounting: it counts the products' wall time and nothing between
// them, and a grouped product once (its problems run through gemm inside it), in f32 and
// in bf16, where each problem is a gemm call of its own.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/mixed_precision.h"
#include "kernels/product_clock.h"

using namespace moepp;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Six experts' products of 96 x 256 by 256 x 512, grouped; the clock must count at most
// the call's wall time (once), and most of it.
void expect_grouped_counted_once() {
  const int64_t M = 96, N = 512, K = 256;
  std::vector<float> a(size_t(M * K), 0.5f), b(size_t(K * N), 0.25f), c(size_t(6 * M * N));
  std::vector<GemmProblem<float>> problems;
  for (int e = 0; e < 6; ++e) problems.push_back({M, N, K, a.data(), K, b.data(), N, c.data() + e * M * N, N, 0.0f});
  gemm_grouped<float>(Trans::N, Trans::N, problems);  // kernels built, pages touched
  const ProductClock clock;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 5; ++r) gemm_grouped<float>(Trans::N, Trans::N, problems);
  const double wall = seconds_since(t0);
  EXPECT_GT(clock.seconds(), 0.5 * wall);
  EXPECT_LE(clock.seconds(), wall);
  EXPECT_FLOAT_EQ(c[0], 0.5f * 0.25f * float(K));
}

}  // namespace

TEST(ProductClock, CountsTheProductsAndNotTheTimeBetween) {
  const int64_t n = 256;
  std::vector<float> a(size_t(n * n), 1.0f), b(size_t(n * n), 1.0f), c(size_t(n * n));
  {
    const ProductClock clock;
    EXPECT_EQ(clock.seconds(), 0.0);
    const auto t0 = std::chrono::steady_clock::now();
    gemm<float>(Trans::N, Trans::N, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    gemm<float>(Trans::N, Trans::N, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double wall = seconds_since(t0);
    EXPECT_GT(clock.seconds(), 0.0);
    EXPECT_LE(clock.seconds() + 0.03, wall);  // the sleep is not a product
    EXPECT_EQ(c[0], float(n));
  }
  // Off again: a new clock starts from zero, and only one counts at a time.
  const ProductClock again;
  EXPECT_EQ(again.seconds(), 0.0);
  EXPECT_THROW({ const ProductClock second; }, moepp::Error);
}

TEST(ProductClock, CountsAGroupedProductOnce) {
  expect_grouped_counted_once();
  if (!gemm_bf16_available()) GTEST_SKIP() << "no bf16 products on this CPU (the f32 case ran)";
  const GemmPrecisionScope bf16(GemmPrecision::bf16);
  expect_grouped_counted_once();  // each problem a gemm call, on the threads in turn
  const int saved = max_threads();
  set_threads(1);  // one thread: the problems' gemm calls run on the caller, nested
  expect_grouped_counted_once();
  set_threads(saved);
}
