// The zero expert (MoE++ "discard"): out = 0. Its slots are dropped at dispatch: nothing
// is gathered, computed or combined for them, and no gradient flows through them (the
// router still receives the gradient of the balance loss for choosing it).
#pragma once

namespace moepp {

inline constexpr bool zero_expert_contributes = false;

}  // namespace moepp
