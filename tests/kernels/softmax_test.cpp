#include "kernels/softmax.h"

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(Softmax, ForwardMatchesDefinitionAndSurvivesLargeLogits) {
  Rng rng(1);
  const int64_t R = 5, C = 9;
  auto x = random_tensor<double>({R, C}, rng, 3.0);
  x[0] = 800.0;  // exp would overflow without the max shift
  Tensor<double> y({R, C}), want({R, C});
  softmax_forward(x.data(), y.data(), R, C);
  for (int64_t r = 0; r < R; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < C; ++j) mx = std::max(mx, x[r * C + j]);
    for (int64_t j = 0; j < C; ++j) sum += std::exp(x[r * C + j] - mx);
    for (int64_t j = 0; j < C; ++j) want[r * C + j] = std::exp(x[r * C + j] - mx) / sum;
  }
  EXPECT_LT(rel_error(y, want), 1e-14);
}

TEST(Softmax, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  const int64_t R = 4, C = 7;
  auto x = random_tensor<double>({R, C}, rng);
  auto w = random_tensor<double>({R, C}, rng);
  Tensor<double> y({R, C}), dx({R, C});
  auto loss = [&] {
    softmax_forward(x.data(), y.data(), R, C);
    double l = 0;
    for (int64_t i = 0; i < R * C; ++i) l += w[i] * y[i];
    return l;
  };
  loss();
  softmax_backward(y.data(), w.data(), dx.data(), R, C);
  expect_fd_gradient("softmax dx", x.data(), dx.data(), R * C, loss);

  auto xf = cast<float>(x), wf = cast<float>(w);
  Tensor<float> yf({R, C}), dxf({R, C});
  softmax_forward(xf.data(), yf.data(), R, C);
  softmax_backward(yf.data(), wf.data(), dxf.data(), R, C);
  loss();
  EXPECT_LT(rel_error(yf, y), 1e-6);
  EXPECT_LT(rel_error(dxf, dx), 1e-4);
}
