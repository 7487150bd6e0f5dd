// Dispatch: sorts the routed slots (token t, choice j; slot id t*k+j) by expert with a
// counting sort, stable in token order. FFN experts come first in the pool, so the FFN
// slots occupy sorted positions [0, ffn_rows): that block is gathered into one contiguous
// matrix for the grouped GEMMs. Zero-computation slots never enter it.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

struct DispatchPlan {
  int64_t tokens = 0;
  int top_k = 0;
  int num_ffn = 0;
  std::vector<int64_t> offsets;       // [E + 1]: expert e owns sorted[offsets[e], offsets[e+1])
  std::vector<int32_t> sorted_slots;  // slot ids grouped by expert
  std::vector<int32_t> slot_pos;      // [T*k]: where each slot sits in sorted_slots

  int64_t rows(int e) const { return offsets[size_t(e) + 1] - offsets[size_t(e)]; }
  int64_t ffn_rows() const { return offsets[size_t(num_ffn)]; }
  int32_t token_of(int32_t slot) const { return slot / top_k; }
};

void plan_dispatch(const MoeConfig& cfg, const int32_t* idx, int64_t tokens, DispatchPlan& plan);

// xg[r] = x[token of sorted slot r] for the FFN rows r in [0, ffn_rows).
template <typename T>
void gather_ffn_rows(const DispatchPlan& plan, const T* x, int64_t D, T* xg);

}  // namespace moepp
