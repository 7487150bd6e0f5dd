#include "kernels/rope.h"

#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
const int64_t Tn = 5, H = 3, HD = 8;

// Hugging Face's formulation, written out: out = x*cos + rotate_half(x)*sin with cos/sin
// repeated over both halves.
void naive_rope(const double* x, const int32_t* pos, double theta, double factor, double* out) {
  for (int64_t t = 0; t < Tn; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const double* xr = x + (t * H + h) * HD;
      double* o = out + (t * H + h) * HD;
      for (int64_t d = 0; d < HD; ++d) {
        const int64_t j = d % (HD / 2);
        const double ang = pos[t] / factor * std::pow(theta, -2.0 * j / HD);
        const double rot = d < HD / 2 ? -xr[d + HD / 2] : xr[d - HD / 2];
        o[d] = xr[d] * std::cos(ang) + rot * std::sin(ang);
      }
    }
}
}  // namespace

TEST(Rope, ForwardMatchesRotateHalfFormulation) {
  Rng rng(1);
  auto x = random_tensor<double>({Tn, H, HD}, rng);
  // The angles come from a table of positions kept between calls (grown as positions
  // grow, rebuilt for another factor; positions past 65535 computed directly): calls with
  // small, then larger positions, reaching past the table, for two factors.
  for (const std::vector<int32_t>& pos : {std::vector<int32_t>{0, 1, 7, 100, 4095}, {2, 65535, 65536, 200000, 5000}})
    for (double factor : {1.0, 4.0}) {
      Tensor<double> y = x.clone(), want({Tn, H, HD});
      rope_forward(y.data(), pos.data(), Tn, H, HD, RopeConfig{10000.0, factor});
      naive_rope(x.data(), pos.data(), 10000.0, factor, want.data());
      EXPECT_LT(rel_error(y, want), 1e-13) << "factor " << factor << " last position " << pos.back();
    }
  // position 0 is the identity
  Tensor<double> y = x.clone();
  std::vector<int32_t> zeros(Tn, 0);
  rope_forward(y.data(), zeros.data(), Tn, H, HD, RopeConfig{});
  EXPECT_LT(rel_error(y, x), 1e-15);
}

TEST(Rope, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  auto x = random_tensor<double>({Tn, H, HD}, rng), dy = random_tensor<double>({Tn, H, HD}, rng);
  std::vector<int32_t> pos = {3, 1, 4, 1, 5};
  const RopeConfig cfg{500000.0, 1.0};
  auto loss = [&] {
    Tensor<double> y = x.clone();
    rope_forward(y.data(), pos.data(), Tn, H, HD, cfg);
    double l = 0;
    for (int64_t i = 0; i < y.numel(); ++i) l += dy[i] * y[i];
    return l;
  };
  Tensor<double> dx = dy.clone();
  rope_backward(dx.data(), pos.data(), Tn, H, HD, cfg);
  expect_fd_gradient("rope dx", x.data(), dx.data(), x.numel(), loss);
  auto dxf = cast<float>(dy);
  rope_backward(dxf.data(), pos.data(), Tn, H, HD, cfg);
  EXPECT_LT(rel_error(dxf, dx), 1e-6);
}
