// The MoE++ layer and its vanilla twin at the released MoE++7B layer shape, as the layer
// benchmarks build them (moe_layer_bench, dist_bench): the same FFN experts, top-2, the
// official gate weights and logit norm; MoE++ adds 2 constant, 1 copy and 1 zero expert.
// A router bias knob sets the share of slots the zero-computation experts get, so a bench
// can measure at a chosen share instead of whatever random weights happen to route.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp::bench {

MoeConfig released_moe_layer(int64_t hidden, int64_t intermediate, int ffn_experts, bool moepp);

// The bias: with z_prev = 1, a diagonal gate map of `bias` on the zero-computation experts
// adds `bias` to their logits (before the logit norm).
void set_zc_bias(const MoeConfig& cfg, MoeParams<float>& w, float bias);

// The share of x's slots routed to zero-computation experts (ones: z_prev of all ones).
double zc_fraction(const MoeConfig& cfg, const MoeParams<float>& w, const Tensor<float>& x,
                   const Tensor<float>& ones, int64_t tokens);

// Bisection on the bias until the routed share is within 0.01 of target; returns the share.
double calibrate_zc(const MoeConfig& cfg, MoeParams<float>& w, const Tensor<float>& x,
                    const Tensor<float>& ones, int64_t tokens, double target);

}  // namespace moepp::bench
