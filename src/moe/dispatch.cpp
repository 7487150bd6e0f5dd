#include "moe/dispatch.h"

#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

void plan_dispatch(const MoeConfig& cfg, const int32_t* idx, int64_t tokens, DispatchPlan& plan) {
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
  for (int e = 0; e < E; ++e) plan.offsets[size_t(e) + 1] += plan.offsets[size_t(e)];
  std::vector<int64_t> next(plan.offsets.begin(), plan.offsets.end() - 1);
  plan.sorted_slots.resize(size_t(slots));
  plan.slot_pos.resize(size_t(slots));
  for (int64_t s = 0; s < slots; ++s) {
    const int64_t pos = next[size_t(idx[s])]++;
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
