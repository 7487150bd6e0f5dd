// Routing statistics (SPEC §5): where the slots of a batch went, per expert kind, and what
// that means for FFN work relative to the vanilla twin (mean FFN experts per token / k).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "moe/dispatch.h"
#include "moe/moe_config.h"

namespace moepp {

struct RoutingStats {
  int64_t tokens = 0;
  int top_k = 0;
  std::array<int64_t, 4> slots_by_kind{};  // indexed by ExpertKind
  std::vector<int64_t> ffn_load;           // slots per FFN expert
  int64_t dropped = 0;                     // slots over capacity (training with a capacity factor)

  // The computed slots (dropped ones excluded; the shares and FFN figures are of these).
  int64_t slots() const { return slots_by_kind[0] + slots_by_kind[1] + slots_by_kind[2] + slots_by_kind[3]; }
  double share(ExpertKind k) const;
  double ffn_experts_per_token() const;  // the MoE++ paper's measure, <= k
  double ffn_flops_vs_vanilla() const;   // ffn_experts_per_token / k
  double ffn_load_max_over_mean() const;
  double dropped_share() const;          // dropped over all routed slots
  void add(const RoutingStats& other);   // pools layers or batches
};

RoutingStats routing_stats(const MoeConfig& cfg, const DispatchPlan& plan);

}  // namespace moepp
