// The twin verdict: the paired standard error against a direct double computation, and the
// words against the two-standard-error rule.
#include "study/verdict.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace moepp;

TEST(Verdict, PairedDifferenceIsTheMeanAndStandardErrorOfTheDifferences) {
  const std::vector<double> a = {4.1, 3.9, 4.4, 4.0, 4.2}, b = {4.0, 3.95, 4.3, 4.05, 4.0};
  // differences 0.1, -0.05, 0.1, -0.05, 0.2: mean 0.06; squared deviations from the mean
  // 0.0016, 0.0121, 0.0016, 0.0121, 0.0196 sum to 0.047; sd^2 = 0.047 / 4; se = sqrt(sd^2 / 5).
  const PairedDifference d = paired_difference(a, b);
  EXPECT_EQ(d.pairs, 5);
  EXPECT_NEAR(d.mean, 0.06, 1e-12);
  EXPECT_NEAR(d.std_error, std::sqrt(0.047 / 4 / 5), 1e-12);
  EXPECT_EQ(paired_difference({1.0}, {0.5}).std_error, 0.0);
  EXPECT_THROW(paired_difference({1.0, 2.0}, {1.0}), std::exception);
}

TEST(Verdict, WordsFollowTwoStandardErrors) {
  TwinVerdict t{.moepp_run = "runs/moepp",
                .vanilla_run = "runs/vanilla",
                .moepp_loss = 5.019,
                .vanilla_loss = 5.0,
                .loss_difference = {.mean = 0.019, .std_error = 0.01, .pairs = 20},
                .val_tokens = 20480,
                .moepp_ffn_per_token = 1.1,
                .vanilla_ffn_per_token = 2.0,
                .top_k = 2};
  EXPECT_EQ(t.quality_word(), "the same");
  t.moepp_loss = 5.021;
  EXPECT_EQ(t.quality_word(), "worse");
  t.moepp_loss = 4.979;
  EXPECT_EQ(t.quality_word(), "better");
  EXPECT_NEAR(t.ffn_compute_share(), 0.55, 1e-12);
  EXPECT_TRUE(std::isnan(t.speed_ratio()));
  EXPECT_NE(t.text().find("not known"), std::string::npos);
  t.moepp_tokens_per_s = 1240;
  t.vanilla_tokens_per_s = 1000;
  EXPECT_NEAR(t.speed_ratio(), 1.24, 1e-12);
  const std::string text = t.text();
  EXPECT_NE(text.find("better than vanilla by 0.0210"), std::string::npos) << text;
  EXPECT_NE(text.find("55% of the"), std::string::npos) << text;
  EXPECT_NE(text.find("1.24x the vanilla tokens/s"), std::string::npos) << text;
  EXPECT_EQ(t.to_json()["training_speed_ratio"].get<double>(), t.speed_ratio());
  // One batch gives no noise estimate: no judgement either way.
  t.loss_difference = paired_difference({4.9}, {5.0});
  EXPECT_EQ(t.quality_word(), "undetermined");
  EXPECT_NE(t.text().find("one validation batch"), std::string::npos) << t.text();
}
