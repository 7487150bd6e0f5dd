#include "kernels/swiglu.h"

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(SwiGlu, ForwardIsSiluOfFirstHalfTimesSecondHalf) {
  Rng rng(1);
  const int64_t R = 3, I = 5;
  auto u = random_tensor<double>({R, 2 * I}, rng, 2.0);
  Tensor<double> h({R, I}), want({R, I});
  swiglu_forward(u.data(), h.data(), R, I);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < I; ++j) {
      const double a = u[r * 2 * I + j], b = u[r * 2 * I + I + j];
      want[r * I + j] = a / (1 + std::exp(-a)) * b;
    }
  EXPECT_LT(rel_error(h, want), 1e-14);
}

TEST(SwiGlu, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  const int64_t R = 4, I = 6;
  auto u = random_tensor<double>({R, 2 * I}, rng, 2.0), dh = random_tensor<double>({R, I}, rng);
  Tensor<double> h({R, I}), du({R, 2 * I});
  auto loss = [&] {
    swiglu_forward(u.data(), h.data(), R, I);
    double l = 0;
    for (int64_t i = 0; i < R * I; ++i) l += dh[i] * h[i];
    return l;
  };
  loss();
  swiglu_backward(u.data(), dh.data(), du.data(), R, I);
  expect_fd_gradient("swiglu du", u.data(), du.data(), R * 2 * I, loss);

  auto uf = cast<float>(u), dhf = cast<float>(dh);
  Tensor<float> hf({R, I}), duf({R, 2 * I});
  swiglu_forward(uf.data(), hf.data(), R, I);
  swiglu_backward(uf.data(), dhf.data(), duf.data(), R, I);
  loss();
  EXPECT_LT(rel_error(hf, h), 1e-6);
  EXPECT_LT(rel_error(duf, du), 1e-4);
}

// The vectorised f32 path (16 lanes and a masked tail) against the double definition,
// element by element, over a wide range of pre-activations including the saturated ends.
TEST(SwiGlu, F32MatchesF64ElementwiseAcrossTheRange) {
  Rng rng(3);
  const int64_t R = 3, I = 37;
  auto u = random_tensor<double>({R, 2 * I}, rng, 4.0), dh = random_tensor<double>({R, I}, rng);
  const double extremes[] = {-200, -90, -40, -17.5, -1e-3, 0, 1e-3, 17.5, 40, 90, 200};
  for (int64_t i = 0; i < 11; ++i) u[i * 3] = extremes[i];
  auto uf = cast<float>(u), dhf = cast<float>(dh);
  u = cast<double>(uf);  // compare on the inputs f32 actually saw
  Tensor<double> h({R, I}), du({R, 2 * I});
  Tensor<float> hf({R, I}), duf({R, 2 * I});
  swiglu_forward(u.data(), h.data(), R, I);
  swiglu_forward(uf.data(), hf.data(), R, I);
  swiglu_backward(u.data(), cast<double>(dhf).data(), du.data(), R, I);
  swiglu_backward(uf.data(), dhf.data(), duf.data(), R, I);
  for (int64_t i = 0; i < R * I; ++i) EXPECT_NEAR(hf[i], h[i], 1e-6 * std::fabs(h[i]) + 1e-30) << i;
  for (int64_t i = 0; i < R * 2 * I; ++i) EXPECT_NEAR(duf[i], du[i], 2e-6 * std::fabs(du[i]) + 1e-30) << i;
}

// accumulate = false writes the gradient without reading du: on a du full of garbage it
// gives exactly what accumulating into zeros gives (vector body and masked tail).
TEST(SwiGlu, BackwardOverwritesWhenNotAccumulating) {
  Rng rng(5);
  const int64_t R = 3, I = 37;
  auto u = random_tensor<float>({R, 2 * I}, rng, 2.0), dh = random_tensor<float>({R, I}, rng);
  Tensor<float> zeroed({R, 2 * I});
  auto garbage = random_tensor<float>({R, 2 * I}, rng, 1e3);
  swiglu_backward(u.data(), dh.data(), zeroed.data(), R, I);
  swiglu_backward(u.data(), dh.data(), garbage.data(), R, I, /*accumulate=*/false);
  for (int64_t i = 0; i < R * 2 * I; ++i) ASSERT_EQ(garbage[i], zeroed[i]) << i;
  Tensor<double> zd({R, 2 * I});
  auto gd = random_tensor<double>({R, 2 * I}, rng, 1e3);
  swiglu_backward(cast<double>(u).data(), cast<double>(dh).data(), zd.data(), R, I);
  swiglu_backward(cast<double>(u).data(), cast<double>(dh).data(), gd.data(), R, I, false);
  for (int64_t i = 0; i < R * 2 * I; ++i) ASSERT_EQ(gd[i], zd[i]) << i;
}
