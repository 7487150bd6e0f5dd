// Training attention with bf16 products (train --precision bf16). Inside a bf16
// GemmPrecisionScope (kernels/mixed_precision.h), where attention_bf16_available(head_dim),
// P V forward (kernels/attention_forward_tiles, its bf16_values) and dO V^T, dS K, dS^T Q and
// P^T dO backward (attention_backward_bf16, here) take bf16 operands and sum in f32
// (AVX-512 BF16's vdpbf16ps: two products a lane per instruction, twice the multiply-adds
// of f32 FMA). What is rounded (to nearest even) is what enters them: v, the probabilities,
// dO, q and k, and dS for dQ and dK. The scores Q K^T stay f32: they are the softmax's
// argument, so rounding q and k there moves a probability by its score's error, ~2^-9 of
// |q| |k|, not of itself (validation loss measured ~0.02 nats higher with them rounded,
// six seeds). The softmax, its probabilities (which the backward recomputes in f32 from q,
// k and the softmax stats), dP, dS and every sum stay f32.
// Shapes and layouts are attention.h's; the results differ from the f32 kernels' by the
// operands' rounding.
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace moepp {

// This build has AVX-512 BF16, and head_dim is even (a pair of a row's bf16 elements is
// one 32-bit lane of the products).
bool attention_bf16_available(int64_t head_dim);

// Whether this thread's training attention takes bf16 products now: inside a bf16
// GemmPrecisionScope, where attention_bf16_available(head_dim). The forward and the
// backward both ask this, so that they agree.
bool attention_products_bf16(int64_t head_dim);

// dq, dk, dv += their gradients.
void attention_backward_bf16(const float* q, const float* k, const float* v, const float* stats, const float* dout,
                             float* dq, float* dk, float* dv, const AttentionShape& s);

}  // namespace moepp
