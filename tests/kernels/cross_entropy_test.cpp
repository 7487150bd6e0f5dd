#include "kernels/cross_entropy.h"

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/quant.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(CrossEntropy, ForwardIsMeanNegativeLogSoftmaxOverCountedRows) {
  Rng rng(1);
  const int64_t R = 5, V = 11;
  auto logits = random_tensor<double>({R, V}, rng, 2.0);
  std::vector<int32_t> targets = {3, -1, 0, 10, 7};
  double want = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (targets[size_t(r)] < 0) continue;
    double sum = 0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(logits[r * V + j]);
    want += -(logits[r * V + targets[size_t(r)]] - std::log(sum)) / 4.0;
  }
  EXPECT_NEAR(cross_entropy_forward(logits.data(), targets.data(), R, V), want, 1e-13);
  // uniform logits give log(V)
  Tensor<float> flat({2, 8});
  std::vector<int32_t> t2 = {1, 2};
  EXPECT_NEAR(cross_entropy_forward(flat.data(), t2.data(), 2, 8), std::log(8.0), 1e-6);
}

TEST(CrossEntropy, FusedGradientMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  const int64_t R = 4, V = 9;
  auto logits = random_tensor<double>({R, V}, rng);
  std::vector<int32_t> targets = {8, 2, -1, 0};
  Tensor<double> d({R, V});
  const double dloss = 1.7;
  const double l = cross_entropy_fused(logits.data(), targets.data(), R, V, dloss, d.data());
  EXPECT_NEAR(l, cross_entropy_forward(logits.data(), targets.data(), R, V), 1e-14);
  expect_fd_gradient("cross-entropy dlogits", logits.data(), d.data(), R * V, [&] {
    return dloss * cross_entropy_forward(logits.data(), targets.data(), R, V);
  });
  auto lf = cast<float>(logits);
  Tensor<float> df({R, V});
  const double l32 = cross_entropy_fused(lf.data(), targets.data(), R, V, float(dloss), df.data());
  EXPECT_NEAR(l32, l, 1e-5 * l);
  EXPECT_LT(rel_error(df, d), 1e-4);
}

TEST(CrossEntropy, TargetBeyondVocabularyIsAnError) {
  Tensor<float> logits({1, 4}), d({1, 4});
  std::vector<int32_t> t = {4};
  EXPECT_THROW(cross_entropy_forward(logits.data(), t.data(), 1, 4), Error);
  EXPECT_THROW(cross_entropy_fused(logits.data(), t.data(), 1, 4, 1.0f, d.data()), Error);
}

// bf16 training's form: the gradient written rounded to bf16, the bits round_to_bf16 gives of
// the f32 gradient, within a bf16 rounding of the f64 one, and zero on an ignored row.
TEST(CrossEntropy, Bf16GradientIsTheF32GradientRounded) {
  Rng rng(3);
  const int64_t R = 6, V = 37;  // rows of two whole vectors and a ragged tail
  auto logits = random_tensor<double>({R, V}, rng, 3.0);
  std::vector<int32_t> targets = {36, 0, -1, 17, 5, 20};
  const double dloss = 0.8;
  Tensor<double> d({R, V});
  cross_entropy_fused(logits.data(), targets.data(), R, V, dloss, d.data());
  auto lf = cast<float>(logits);
  Tensor<float> df({R, V});
  const double l32 = cross_entropy_fused(lf.data(), targets.data(), R, V, float(dloss), df.data());
  std::vector<uint16_t> bits(size_t(R * V), 0xFFFF), want(size_t(R * V));
  const double l16 = cross_entropy_fused_bf16(lf.data(), targets.data(), R, V, float(dloss), bits.data());
  EXPECT_EQ(l16, l32);
  round_to_bf16(df.data(), R * V, want.data());
  for (int64_t i = 0; i < R * V; ++i) {
    ASSERT_EQ(bits[size_t(i)], want[size_t(i)]) << "element " << i;
    const double got = bf16_to_f32(bf16{bits[size_t(i)]});
    EXPECT_NEAR(got, d[i], std::abs(d[i]) / 256 + 1e-7) << "element " << i;
    if (i / V == 2) {
      EXPECT_EQ(bits[size_t(i)], 0) << "ignored row, element " << i;
    }
  }
}
