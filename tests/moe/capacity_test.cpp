// Expert capacity (SPEC §2.4, the paper's Eq. 8): the capacities in closed form, the slots
// kept in token order, the layer's output against a naive double implementation that
// drops the same slots, and the gradients with slots dropped against finite differences.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "moe/dispatch.h"
#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {

MoeConfig small_pool(int copy, int zero, double tau) {
  MoeConfig cfg;
  cfg.hidden = 2;
  cfg.intermediate = 2;
  cfg.num_ffn = 3;
  cfg.num_copy = copy;
  cfg.num_zero = zero;
  cfg.top_k = 2;
  cfg.balance_tau = tau;
  return cfg;
}

}  // namespace

TEST(Capacity, EquationEightInClosedForm) {
  // N = 3 FFN and n = 2 zero-computation experts, tau = 0.5, S = 8 slots.
  const MoeConfig moepp = small_pool(1, 1, 0.5);
  // gamma = 1: FFN 1 * 0.5 * 8 / 3.5 = 1.14 -> 2; zero-computation 8 / 3.5 = 2.29 -> 3.
  EXPECT_EQ(expert_capacity(moepp, 1.0, 8).ffn, 2);
  EXPECT_EQ(expert_capacity(moepp, 1.0, 8).zero_compute, 3);
  // gamma = 0.5: 0.57 -> 1 and 1.14 -> 2.
  EXPECT_EQ(expert_capacity(moepp, 0.5, 8).ffn, 1);
  EXPECT_EQ(expert_capacity(moepp, 0.5, 8).zero_compute, 2);
  // Where nothing rounds, the capacities add up to gamma * S: 3 * 400 + 2 * 800 = 2800.
  const ExpertCapacity big = expert_capacity(moepp, 1.0, 2800);
  EXPECT_EQ(big.ffn, 400);
  EXPECT_EQ(big.zero_compute, 800);
  // A vanilla pool shares S evenly, tau or not: 1.25 * 8 / 3 = 3.33 -> 4.
  EXPECT_EQ(expert_capacity(small_pool(0, 0, 0.0), 1.25, 8).ffn, 4);
  // A factor too large to mean anything keeps every slot (no expert can take more than S).
  EXPECT_EQ(expert_capacity(moepp, 1e300, 8).ffn, 8);
  EXPECT_EQ(expert_capacity(moepp, 1e308, 2800).zero_compute, 2800);
  // tau = 0 with zero-computation experts leaves FFN experts nothing: refused.
  EXPECT_THROW(expert_capacity(small_pool(1, 1, 0.0), 1.0, 8), Error);
  EXPECT_THROW(expert_capacity(moepp, -1.0, 8), Error);
}

TEST(Capacity, EachExpertKeepsItsFirstSlotsInTokenOrder) {
  const MoeConfig cfg = small_pool(1, 1, 0.5);
  const int32_t idx[] = {4, 0, 0, 2, 3, 0, 2, 4};  // 4 tokens x 2; experts 3 copy, 4 zero
  // gamma = 0.5: FFN experts keep 1 slot, zero-computation experts 2.
  const std::vector<int64_t> routed = {3, 0, 2, 1, 2};  // slots per expert in idx
  const auto keep = slots_kept_under_capacity(cfg, 0.5, routed, nullptr);
  EXPECT_EQ(keep, (std::vector<int64_t>{1, 0, 1, 1, 2}));
  DispatchPlan plan;
  plan_dispatch(cfg, idx, 4, plan, 0.5);
  // Expert 0 had slots 1, 2, 5: keeps 1. Expert 2 had 3, 6: keeps 3.
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 1, 1, 2, 3, 5}));
  EXPECT_EQ(plan.sorted_slots, (std::vector<int32_t>{1, 3, 4, 0, 7}));
  EXPECT_EQ(plan.dropped_slots, 3);
  for (int64_t s = 0; s < 8; ++s) {
    const bool want_dropped = s == 2 || s == 5 || s == 6;
    EXPECT_EQ(plan.dropped(s), want_dropped) << "slot " << s;
    if (!want_dropped) {
      EXPECT_EQ(plan.sorted_slots[size_t(plan.slot_pos[size_t(s)])], int32_t(s));
    }
  }
  EXPECT_EQ(plan.ffn_rows(), 2);
  const RoutingStats st = routing_stats(cfg, plan);
  EXPECT_EQ(st.dropped, 3);
  EXPECT_EQ(st.slots(), 5);
  EXPECT_NEAR(st.dropped_share(), 3.0 / 8.0, 1e-15);
  // Dropless keeps everything.
  plan_dispatch(cfg, idx, 4, plan);
  EXPECT_EQ(plan.dropped_slots, 0);
  EXPECT_EQ(plan.ffn_rows(), 5);
}

namespace {

// Dropped slots of a forward, by expert kind (indexed by ExpertKind).
std::array<int64_t, 4> dropped_by_kind(const MoeConfig& cfg, const MoeCache<double>& c, int64_t tokens) {
  std::array<int64_t, 4> n{};
  for (int64_t slot = 0; slot < tokens * cfg.top_k; ++slot)
    if (c.plan.dropped(slot)) ++n[size_t(cfg.kind(c.router.idx[size_t(slot)]))];
  return n;
}

// The layer's output from its routing (idx, g) alone, in double, one slot at a time, with
// the capacities counted here from Eq. 8: what SPEC §2.2 step 6 adds for every kept slot.
std::vector<double> naive_output(const MoeConfig& cfg, const MoeParams<double>& w, const double* x, int64_t n,
                                 const MoeCache<double>& c, double gamma, int64_t& dropped) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, k = cfg.top_k;
  const int nz = cfg.num_zero_compute();
  const double S = double(n * k), denom = cfg.balance_tau * cfg.num_ffn + nz;
  const int64_t cap_ffn = int64_t(std::ceil(gamma * cfg.balance_tau * S / denom));
  const int64_t cap_zc = int64_t(std::ceil(gamma * S / denom));
  std::vector<int64_t> used(size_t(cfg.num_experts()), 0);
  std::vector<double> y(size_t(n * D), 0.0);
  dropped = 0;
  const double scale = cfg.input_scale();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int e = c.router.idx[size_t(t * k + j)];
      const double g = c.router.g[t * k + j];
      if (++used[size_t(e)] > (cfg.kind(e) == ExpertKind::ffn ? cap_ffn : cap_zc)) {
        ++dropped;
        continue;
      }
      std::vector<double> xs(static_cast<size_t>(D)), out(static_cast<size_t>(D), 0.0);
      for (int64_t d = 0; d < D; ++d) xs[size_t(d)] = scale * x[t * D + d];
      switch (cfg.kind(e)) {
        case ExpertKind::ffn: {
          const double* up = w.up[size_t(e)].data();      // [2I, D]: a rows, then b rows
          const double* down = w.down[size_t(e)].data();  // [D, I]
          std::vector<double> h(static_cast<size_t>(I));
          for (int64_t i = 0; i < I; ++i) {
            double a = 0, b = 0;
            for (int64_t d = 0; d < D; ++d) {
              a += up[i * D + d] * xs[size_t(d)];
              b += up[(I + i) * D + d] * xs[size_t(d)];
            }
            h[size_t(i)] = a / (1.0 + std::exp(-a)) * b;
          }
          for (int64_t d = 0; d < D; ++d)
            for (int64_t i = 0; i < I; ++i) out[size_t(d)] += down[d * I + i] * h[size_t(i)];
          break;
        }
        case ExpertKind::constant: {
          const size_t ci = size_t(e - cfg.num_ffn);
          const double* wc = w.constant_wg[ci].data();
          double z0 = 0, z1 = 0;
          for (int64_t d = 0; d < D; ++d) {
            z0 += wc[d] * xs[size_t(d)];
            z1 += wc[D + d] * xs[size_t(d)];
          }
          const double a1 = 1.0 / (1.0 + std::exp(z0 - z1)), a0 = 1.0 - a1;
          for (int64_t d = 0; d < D; ++d) out[size_t(d)] = a0 * xs[size_t(d)] + a1 * w.constant[ci][d];
          break;
        }
        case ExpertKind::copy:
          out = xs;
          break;
        case ExpertKind::zero:
          break;
      }
      for (int64_t d = 0; d < D; ++d) y[size_t(t * D + d)] += g * out[size_t(d)];
    }
  return y;
}

}  // namespace

TEST(Capacity, LayerOutputEqualsANaiveLayerDroppingTheSameSlots) {
  // Every kind, inputs scaled by k (the official code's default) and not.
  for (bool scale : {false, true}) {
    MoeConfig cfg = wide_moe_config(false);
    cfg.scale_inputs = scale;
    MoeStack<double> s(cfg, 1, 48);
    s.randomize(7);
    const double gamma = 0.6;
    s.caches[0].capacity_factor = gamma;
    s.forward();
    const auto& c = s.caches[0];
    Tensor<double> y({s.tokens, cfg.hidden});
    for (int64_t i = 0; i < y.numel(); ++i) y[i] = s.xs[1][i] - s.xs[0][i];
    int64_t dropped = 0;
    const auto want = naive_output(cfg, s.params[0], s.x.data(), s.tokens, c, gamma, dropped);
    EXPECT_LT(rel_error(y.data(), want.data(), y.numel()), 1e-12) << "scale " << scale;
    EXPECT_EQ(c.plan.dropped_slots, dropped);
    // The test means something only if slots of every kind with an output were dropped.
    const auto dropped_kinds = dropped_by_kind(cfg, c, s.tokens);
    for (ExpertKind kind : {ExpertKind::ffn, ExpertKind::constant, ExpertKind::copy})
      EXPECT_GT(dropped_kinds[size_t(kind)], 0) << expert_kind_name(kind) << " slots dropped, scale " << scale;
    EXPECT_EQ(c.ffn.gemm_rows, c.stats.slots_by_kind[size_t(ExpertKind::ffn)]) << "dropped FFN slots reach no GEMM";
    EXPECT_EQ(c.stats.dropped, dropped);
  }
}

TEST(Capacity, GradientsWithDroppedSlotsMatchFiniteDifferences) {
  MoeConfig cfg = wide_moe_config(false);
  cfg.hidden = 8;
  cfg.intermediate = 6;
  cfg.num_ffn = 4;
  MoeStack<double> s(cfg, 2, 24);
  for (auto& c : s.caches) c.capacity_factor = 0.5;
  // Each of FFN, constant and copy slots must be dropped in some layer, or the gradients
  // of a dropped slot of that kind would go untested: take the first seed for which that
  // holds.
  auto drops_every_kind = [&] {
    std::array<int64_t, 4> n{};
    for (const auto& c : s.caches) {
      const auto d = dropped_by_kind(cfg, c, s.tokens);
      for (size_t k = 0; k < 4; ++k) n[k] += d[k];
    }
    return n[size_t(ExpertKind::ffn)] > 0 && n[size_t(ExpertKind::constant)] > 0 && n[size_t(ExpertKind::copy)] > 0;
  };
  ASSERT_TRUE(s.randomize_until(3, drops_every_kind)) << "no seed drops FFN, constant and copy slots";
  s.expect_every_gradient_matches_fd();
}
