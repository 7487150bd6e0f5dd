#include "moe/balance_loss.h"

#include <gtest/gtest.h>

using namespace moepp;

// Worked by hand: T = 2, E = 3 (FFN 0, FFN 1, zero 2), k = 1, tau = 0.5.
//   p = [[.5 .3 .2], [.1 .2 .7]], token 0 -> expert 0, token 1 -> expert 2
//   f = [1/2, 0, 1/2], P = [.3, .25, .45], eta = [1, 1, .5]
//   L_b = 1*.5*.3 + 0 + .5*.5*.45 = 0.2625;  dL_b/dp_ti = eta_i f_i / T = [.25, 0, .125]
TEST(BalanceLoss, HandComputationWithTauNotOne) {
  MoeConfig cfg;
  cfg.hidden = 1;
  cfg.intermediate = 1;
  cfg.num_ffn = 2;
  cfg.num_zero = 1;
  cfg.top_k = 1;
  cfg.balance_tau = 0.5;
  const double p[] = {0.5, 0.3, 0.2, 0.1, 0.2, 0.7};
  const int32_t idx[] = {0, 2};
  std::vector<double> f;
  EXPECT_NEAR(balance_loss_forward(cfg, p, idx, 2, f), 0.2625, 1e-15);
  EXPECT_EQ(f, (std::vector<double>{0.5, 0.0, 0.5}));
  double dp[6] = {};
  balance_loss_backward(cfg, f, 2, 2, 2.0, dp);  // dloss = 2 doubles every entry
  const double want[] = {0.5, 0, 0.25, 0.5, 0, 0.25};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(dp[i], want[i], 1e-15) << i;
}

TEST(BalanceLoss, FractionsCountEverySlotSoTheySumToK) {
  MoeConfig cfg;
  cfg.hidden = 1;
  cfg.intermediate = 1;
  cfg.num_ffn = 3;
  cfg.num_copy = 1;
  cfg.top_k = 2;
  cfg.balance_tau = 1.0;
  const float p[] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
  const int32_t idx[] = {0, 3, 1, 3};
  std::vector<double> f;
  // uniform p: L_b = sum_i f_i / 4 = k / 4
  EXPECT_NEAR(balance_loss_forward(cfg, p, idx, 2, f), 0.5, 1e-7);
  EXPECT_DOUBLE_EQ(f[3], 1.0);
}
