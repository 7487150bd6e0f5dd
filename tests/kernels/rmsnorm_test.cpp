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

// The f32 kernels sum in 16 lanes: widths of whole vectors, a ragged tail and one under a
// vector, each against the formulas in double, with dx and dw accumulated onto what they held.
TEST(RmsNorm, F32LanesMatchNaiveDoubleAtEveryWidth) {
  for (const int64_t width : {int64_t(7), int64_t(16), int64_t(40), int64_t(256)}) {
    SCOPED_TRACE(width);
    const int64_t rows = 33;
    Rng rng{uint64_t(width)};
    auto x = random_tensor<float>({rows, width}, rng), w = random_tensor<float>({width}, rng);
    auto dy = random_tensor<float>({rows, width}, rng), dx = random_tensor<float>({rows, width}, rng);
    auto dw = random_tensor<float>({width}, rng);
    Tensor<float> y({rows, width}), rstd({rows});
    Tensor<double> want_y({rows, width}), want_dx({rows, width}), want_dw({width});
    for (int64_t j = 0; j < width; ++j) want_dw[j] = dw[j];
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0, dot = 0;
      for (int64_t j = 0; j < width; ++j) {
        ss += double(x[r * width + j]) * x[r * width + j];
        dot += double(w[j]) * dy[r * width + j] * x[r * width + j];
      }
      const double inv = 1 / std::sqrt(ss / double(width) + kEps);
      for (int64_t j = 0; j < width; ++j) {
        const int64_t i = r * width + j;
        want_y[i] = double(w[j]) * x[i] * inv;
        want_dx[i] = dx[i] + inv * w[j] * dy[i] - double(x[i]) * dot * inv * inv * inv / double(width);
        want_dw[j] += double(dy[i]) * x[i] * inv;
      }
    }
    rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, width, float(kEps));
    rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), rows, width);
    EXPECT_LT(rel_error(cast<double>(y), want_y), 1e-6);
    EXPECT_LT(rel_error(cast<double>(dx), want_dx), 1e-6);
    EXPECT_LT(rel_error(cast<double>(dw), want_dw), 1e-6);
  }
}
