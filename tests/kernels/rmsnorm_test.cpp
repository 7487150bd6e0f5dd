#include "kernels/rmsnorm.h"

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
const int64_t R = 5, D = 12;
const double kEps = 1e-5;
}

TEST(RmsNorm, ForwardMatchesNaiveDouble) {
  Rng rng(1);
  auto x = random_tensor<double>({R, D}, rng), w = random_tensor<double>({D}, rng);
  Tensor<double> y({R, D}), rstd({R}), want({R, D});
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), R, D, kEps);
  for (int64_t r = 0; r < R; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < D; ++j) ms += x[r * D + j] * x[r * D + j] / D;
    for (int64_t j = 0; j < D; ++j) want[r * D + j] = w[j] * x[r * D + j] / std::sqrt(ms + kEps);
  }
  EXPECT_LT(rel_error(y, want), 1e-14);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  auto x = random_tensor<double>({R, D}, rng), w = random_tensor<double>({D}, rng);
  auto dy = random_tensor<double>({R, D}, rng);
  Tensor<double> y({R, D}), rstd({R}), dx({R, D}), dw({D});
  auto loss = [&] {
    rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), R, D, kEps);
    double l = 0;
    for (int64_t i = 0; i < R * D; ++i) l += dy[i] * y[i];
    return l;
  };
  loss();
  rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), R, D);
  expect_fd_gradient("rmsnorm dx", x.data(), dx.data(), R * D, loss);
  expect_fd_gradient("rmsnorm dw", w.data(), dw.data(), D, loss);

  auto xf = cast<float>(x), wf = cast<float>(w), dyf = cast<float>(dy);
  Tensor<float> yf({R, D}), rf({R}), dxf({R, D}), dwf({D});
  rmsnorm_forward(xf.data(), wf.data(), yf.data(), rf.data(), R, D, float(kEps));
  rmsnorm_backward(xf.data(), wf.data(), rf.data(), dyf.data(), dxf.data(), dwf.data(), R, D);
  loss();
  EXPECT_LT(rel_error(yf, y), 1e-6);
  EXPECT_LT(rel_error(dxf, dx), 1e-4);
  EXPECT_LT(rel_error(dwf, dw), 1e-4);
}
