// Dispatch: sorts the routed slots (token t, choice j; slot id t*k+j) by expert with a
// counting sort, stable in token order. FFN experts come first in the pool, so the FFN
// slots occupy sorted positions [0, ffn_rows): that block is gathered into one contiguous
// matrix for the grouped GEMMs. Zero-computation slots never enter it.
// With a capacity (SPEC §2.4, training only: docs/decisions.md) each expert keeps its
// first slots in token order up to its capacity; the rest are dropped: they enter no
// expert's group, and the layer adds nothing for them.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

class Collectives;

struct DispatchPlan {
  int64_t tokens = 0;
  int top_k = 0;
  int num_ffn = 0;
  std::vector<int64_t> offsets;       // [E + 1]: expert e owns sorted[offsets[e], offsets[e+1])
  std::vector<int32_t> sorted_slots;  // slot ids grouped by expert
  std::vector<int32_t> slot_pos;      // [T*k]: where each slot sits in sorted_slots; -1: dropped
  int64_t dropped_slots = 0;          // slots over their expert's capacity

  int64_t rows(int e) const { return offsets[size_t(e) + 1] - offsets[size_t(e)]; }
  int64_t ffn_rows() const { return offsets[size_t(num_ffn)]; }
  int32_t token_of(int32_t slot) const { return slot / top_k; }
  bool dropped(int64_t slot) const { return slot_pos[size_t(slot)] < 0; }
};

// The paper's Eq. 8 for S = T*k slots and capacity factor gamma > 0: an FFN expert takes
// at most ceil(gamma*tau*S / (tau*N + n)) slots, a zero-computation expert (n of them,
// constant experts included) ceil(gamma*S / (tau*N + n)). Throws where tau = 0 would give
// FFN experts no slot at all.
struct ExpertCapacity {
  int64_t ffn = 0, zero_compute = 0;
};
ExpertCapacity expert_capacity(const MoeConfig& cfg, double capacity_factor, int64_t slots);

// capacity_factor 0: dropless, every slot kept. Above 0 (training): each expert keeps its
// first slots in token order up to its capacity (slots_kept_under_capacity; comm: the
// ranks' tokens are one batch), the rest are dropped.
void plan_dispatch(const MoeConfig& cfg, const int32_t* idx, int64_t tokens, DispatchPlan& plan,
                   double capacity_factor = 0.0, Collectives* comm = nullptr);

// How many of its routed slots (routed: [E], this batch's, or this rank's) each expert keeps
// under capacity factor gamma. One process: the capacities are over S = sum(routed).
// Several (comm): the ranks' tokens are one batch in rank order, so the capacities are
// over the whole batch's S and a rank keeps what its expert's capacity leaves after the
// ranks before it.
std::vector<int64_t> slots_kept_under_capacity(const MoeConfig& cfg, double gamma, const std::vector<int64_t>& routed,
                                               Collectives* comm);

// xg[r] = x[token of sorted slot r] for the FFN rows r in [0, ffn_rows).
template <typename T>
void gather_ffn_rows(const DispatchPlan& plan, const T* x, int64_t D, T* xg);

}  // namespace moepp
