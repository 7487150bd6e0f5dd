#include "moe/routing_stats.h"

#include <algorithm>

#include "core/error.h"

namespace moepp {

double RoutingStats::share(ExpertKind k) const {
  const int64_t n = slots();
  return n ? double(slots_by_kind[size_t(k)]) / double(n) : 0.0;
}

double RoutingStats::ffn_experts_per_token() const {
  return tokens ? double(slots_by_kind[size_t(ExpertKind::ffn)]) / double(tokens) : 0.0;
}

double RoutingStats::ffn_flops_vs_vanilla() const {
  return top_k ? ffn_experts_per_token() / double(top_k) : 0.0;
}

double RoutingStats::ffn_load_max_over_mean() const {
  if (ffn_load.empty()) return 0.0;
  int64_t total = 0, mx = 0;
  for (auto l : ffn_load) {
    total += l;
    mx = std::max(mx, l);
  }
  return total ? double(mx) * double(ffn_load.size()) / double(total) : 0.0;
}

double RoutingStats::dropped_share() const {
  const int64_t routed = slots() + dropped;
  return routed ? double(dropped) / double(routed) : 0.0;
}

void RoutingStats::add(const RoutingStats& o) {
  if (ffn_load.empty()) ffn_load.assign(o.ffn_load.size(), 0);
  MOEPP_CHECK(ffn_load.size() == o.ffn_load.size(), "routing stats: cannot pool ",
              ffn_load.size(), " and ", o.ffn_load.size(), " FFN experts");
  tokens += o.tokens;
  top_k = o.top_k;
  dropped += o.dropped;
  for (size_t k = 0; k < 4; ++k) slots_by_kind[k] += o.slots_by_kind[k];
  for (size_t e = 0; e < ffn_load.size(); ++e) ffn_load[e] += o.ffn_load[e];
}

RoutingStats routing_stats(const MoeConfig& cfg, const DispatchPlan& plan) {
  RoutingStats s;
  s.tokens = plan.tokens;
  s.top_k = cfg.top_k;
  s.ffn_load.assign(size_t(cfg.num_ffn), 0);
  s.dropped = plan.dropped_slots;
  for (int e = 0; e < cfg.num_experts(); ++e) {
    s.slots_by_kind[size_t(cfg.kind(e))] += plan.rows(e);
    if (e < cfg.num_ffn) s.ffn_load[size_t(e)] = plan.rows(e);
  }
  return s;
}

}  // namespace moepp
