// Dispatch: the counting sort is a stable permutation of the slots, and zero-computation
// slots never reach a GEMM — the rows the FFN pass fed to the GEMMs equal the FFN slots.
#include "moe/dispatch.h"

#include <gtest/gtest.h>

#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

TEST(Dispatch, CountingSortIsAStablePermutationGroupedByExpert) {
  MoeConfig cfg;
  cfg.hidden = 2;
  cfg.intermediate = 2;
  cfg.num_ffn = 3;
  cfg.num_copy = 1;
  cfg.num_zero = 1;
  cfg.top_k = 2;
  const int32_t idx[] = {4, 0, 0, 2, 3, 0, 2, 4};  // 4 tokens x 2
  DispatchPlan plan;
  plan_dispatch(cfg, idx, 4, plan);
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 3, 3, 5, 6, 8}));
  EXPECT_EQ(plan.sorted_slots, (std::vector<int32_t>{1, 2, 5, 3, 6, 4, 0, 7}));
  for (size_t s = 0; s < 8; ++s) EXPECT_EQ(plan.sorted_slots[size_t(plan.slot_pos[s])], int32_t(s));
  EXPECT_EQ(plan.ffn_rows(), 5);
}

TEST(Dispatch, ZeroComputationSlotsNeverReachAGemm) {
  MoeConfig cfg;
  cfg.hidden = 8;
  cfg.intermediate = 6;
  cfg.num_ffn = 4;
  cfg.num_constant = 2;
  cfg.num_copy = 1;
  cfg.num_zero = 1;
  cfg.logits_norm = true;
  MoeStack<float> s(cfg, 1, 64);
  s.randomize(5);
  for (float bias : {0.0f, 3.0f}) {
    // Push routing towards the zero-computation experts through the router weights' bias
    // direction: add bias * x-independent logits via z_in and the gate map.
    for (int e = 0; e < 8; ++e) s.params[0].gate_map[e * 8 + e] = e >= 4 ? bias : 0.0f;
    for (int64_t t = 0; t < 64; ++t)
      for (int e = 0; e < 8; ++e) s.z_in[t * 8 + e] = 1.0f;
    s.forward();
    const auto& c = s.caches[0];
    int64_t ffn_slots = 0;
    for (int64_t slot = 0; slot < 128; ++slot) ffn_slots += c.router.idx[size_t(slot)] < 4;
    EXPECT_EQ(c.ffn.gemm_rows, ffn_slots) << "bias " << bias;
    EXPECT_EQ(c.stats.slots_by_kind[size_t(ExpertKind::ffn)], ffn_slots);
    EXPECT_EQ(c.stats.slots(), 128);
    if (bias > 0) {
      EXPECT_LT(ffn_slots, 64) << "the bias should send most slots to zero-computation experts";
    }
    EXPECT_NEAR(c.stats.ffn_flops_vs_vanilla(), double(ffn_slots) / 128.0, 1e-12);
  }
}
