// Generation options in closed form: the repeat penalty divides positive logits of recent
// tokens by the penalty and multiplies negative ones (each token once, however often it
// occurred), and leaves every other logit alone.
#include <gtest/gtest.h>

#include "infer/generator.h"

using namespace moepp;

TEST(RepeatPenalty, DividesPositiveMultipliesNegativeOncePerToken) {
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, -4.0f, 0.0f};
  const std::vector<int32_t> recent = {0, 1, 0, 4, 0, 5};
  apply_repeat_penalty(logits.data(), int64_t(logits.size()), recent.data(), int64_t(recent.size()), 2.0);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);   // 2 / 2, not 2 / 8 for three occurrences
  EXPECT_FLOAT_EQ(logits[1], -2.0f);  // -1 * 2
  EXPECT_FLOAT_EQ(logits[2], 0.5f);   // not recent
  EXPECT_FLOAT_EQ(logits[3], 3.0f);   // not recent
  EXPECT_FLOAT_EQ(logits[4], -8.0f);  // -4 * 2
  EXPECT_FLOAT_EQ(logits[5], 0.0f);   // 0 * 2
}

TEST(RepeatPenalty, IgnoresIdsOutsideTheVocabulary) {
  std::vector<float> logits = {1.0f, 1.0f};
  const std::vector<int32_t> recent = {-1, 7, 1};
  apply_repeat_penalty(logits.data(), 2, recent.data(), 3, 4.0);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], 0.25f);
}
