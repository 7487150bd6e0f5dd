#include "moe/dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/collectives.h"
#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

ExpertCapacity expert_capacity(const MoeConfig& cfg, double gamma, int64_t slots) {
  MOEPP_CHECK(std::isfinite(gamma) && gamma > 0, "dispatch: capacity factor must be positive, got ", gamma);
  const int n = cfg.num_zero_compute();
  // A vanilla pool (n = 0) shares the slots evenly whatever tau is.
  const double tau = n == 0 ? 1.0 : cfg.balance_tau;
  MOEPP_CHECK(tau > 0, "dispatch: capacity factor ", gamma,
              " with balance_tau = 0 gives FFN experts no slot (Eq. 8: gamma*tau*S / (tau*N + n))");
  const double per_weight = gamma * double(slots) / (tau * cfg.num_ffn + n);
  // No expert can take more than all S slots: a huge gamma (or one that overflows to inf
  // here) keeps every slot rather than converting an out-of-range double.
  auto capped = [&](double c) { return int64_t(std::min(std::ceil(c), double(slots))); };
  return {capped(tau * per_weight), capped(per_weight)};
}

std::vector<int64_t> slots_kept_under_capacity(const MoeConfig& cfg, double gamma, const std::vector<int64_t>& routed,
                                               Collectives* comm) {
  const int E = cfg.num_experts();
  MOEPP_CHECK(int64_t(routed.size()) == E, "dispatch: ", routed.size(), " slot counts for ", E, " experts");
  int64_t slots = 0;
  for (int64_t c : routed) slots += c;
  std::vector<int64_t> before(static_cast<size_t>(E), 0);  // the expert's slots on the ranks before this one
  int64_t all_slots = slots;
  if (comm && comm->size() > 1) {
    // Every rank's counts in its own row (then one more column: its slots), summed.
    const int ranks = comm->size(), me = comm->rank();
    std::vector<double> table(size_t(ranks) * size_t(E + 1), 0.0);
    for (int e = 0; e < E; ++e) table[size_t(me) * size_t(E + 1) + size_t(e)] = double(routed[size_t(e)]);
    table[size_t(me) * size_t(E + 1) + size_t(E)] = double(slots);
    comm->sum_all(table.data(), int64_t(table.size()));
    all_slots = 0;
    for (int r = 0; r < ranks; ++r) {
      all_slots += int64_t(table[size_t(r) * size_t(E + 1) + size_t(E)]);
      if (r < me)
        for (int e = 0; e < E; ++e) before[size_t(e)] += int64_t(table[size_t(r) * size_t(E + 1) + size_t(e)]);
    }
  }
  const ExpertCapacity cap = expert_capacity(cfg, gamma, all_slots);
  std::vector<int64_t> keep(static_cast<size_t>(E), 0);
  for (int e = 0; e < E; ++e) {
    const int64_t c = cfg.kind(e) == ExpertKind::ffn ? cap.ffn : cap.zero_compute;
    keep[size_t(e)] = std::clamp<int64_t>(c - before[size_t(e)], 0, routed[size_t(e)]);
  }
  return keep;
}

void plan_dispatch(const MoeConfig& cfg, const int32_t* idx, int64_t tokens, DispatchPlan& plan,
                   double capacity_factor, Collectives* comm) {
  const int E = cfg.num_experts(), k = cfg.top_k;
  const int64_t slots = tokens * k;
  MOEPP_CHECK(slots < (int64_t(1) << 31), "dispatch: ", slots, " slots exceed the 32-bit slot index");
  plan.tokens = tokens;
  plan.top_k = k;
  plan.num_ffn = cfg.num_ffn;
  plan.offsets.assign(size_t(E) + 1, 0);
  for (int64_t s = 0; s < slots; ++s) {
    MOEPP_CHECK(idx[s] >= 0 && idx[s] < E, "dispatch: expert index ", idx[s], " at slot ", s,
                " is outside [0, ", E, ")");
    ++plan.offsets[size_t(idx[s]) + 1];
  }
  plan.dropped_slots = 0;
  if (capacity_factor > 0) {
    // offsets[e + 1] holds expert e's routed slots until the prefix sum below.
    const std::vector<int64_t> routed(plan.offsets.begin() + 1, plan.offsets.end());
    const std::vector<int64_t> keep = slots_kept_under_capacity(cfg, capacity_factor, routed, comm);
    for (int e = 0; e < E; ++e) {
      plan.dropped_slots += routed[size_t(e)] - keep[size_t(e)];
      plan.offsets[size_t(e) + 1] = keep[size_t(e)];
    }
  }
  for (int e = 0; e < E; ++e) plan.offsets[size_t(e) + 1] += plan.offsets[size_t(e)];
  std::vector<int64_t> next(plan.offsets.begin(), plan.offsets.end() - 1);
  plan.sorted_slots.resize(size_t(slots - plan.dropped_slots));
  plan.slot_pos.resize(size_t(slots));
  // Token order: an expert's first slots are kept, those past its capacity dropped.
  for (int64_t s = 0; s < slots; ++s) {
    const size_t e = size_t(idx[s]);
    if (next[e] == plan.offsets[e + 1]) {
      plan.slot_pos[size_t(s)] = -1;
      continue;
    }
    const int64_t pos = next[e]++;
    plan.sorted_slots[size_t(pos)] = int32_t(s);
    plan.slot_pos[size_t(s)] = int32_t(pos);
  }
}

template <typename T>
void gather_ffn_rows(const DispatchPlan& plan, const T* x, int64_t D, T* xg) {
  parallel_for(plan.ffn_rows(), [&](int64_t r) {
    const int64_t t = plan.token_of(plan.sorted_slots[size_t(r)]);
    std::memcpy(xg + r * D, x + t * D, size_t(D) * sizeof(T));
  }, 32);
}

template void gather_ffn_rows<float>(const DispatchPlan&, const float*, int64_t, float*);
template void gather_ffn_rows<double>(const DispatchPlan&, const double*, int64_t, double*);

}  // namespace moepp
