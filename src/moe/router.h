// The MoE++ router (SPEC §2.2): logits z = Wg x (or W2 tanh(W1 x)), plus the gating
// residual Gm z_prev from the previous MoE layer, optional logit normalisation, then the
// gate weights of the configured mode over the top-k experts (ties to the lower index).
// The forward keeps what the backward needs in a RouterCache; z (after the residual) is
// what the next MoE layer receives as its z_prev.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp {

template <typename T>
struct RouterCache {
  int64_t tokens = 0;
  Tensor<T> hidden;          // [T, 8E] tanh(W1 x), 2-layer router only
  Tensor<T> z;               // [T, E] logits after the gating residual
  Tensor<T> s;               // [T, E] normalised logits (= z without logit norm)
  Tensor<T> sigma;           // [T] per-token std of z (logit norm only)
  Tensor<T> p;               // [T, E] softmax(s)
  std::vector<int32_t> idx;  // [T, k] selected experts, best first
  Tensor<T> g;               // [T, k] gate weights
  Tensor<T> selected_sum;    // [T] official mode: sum of kept p before renormalising

  void resize(const MoeConfig& cfg, int64_t tokens);
};

// x: [T, D] router input; z_prev: [T, E] or null (no earlier MoE layer / residual off).
// Throws moepp::Error on a non-finite logit (NaN or inf input).
template <typename T>
void router_forward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, int64_t tokens,
                    const T* z_prev, RouterCache<T>& c);

// dg: [T, k] gradient w.r.t. the gate weights; dp_extra: [T, E] gradient w.r.t. p from the
// balance loss (or null); dz_next: [T, E] gradient w.r.t. z from the next MoE layer's
// residual (or null). Accumulates into dx [T, D], dz_prev [T, E] (when z_prev was given)
// and the router's tensors in grad.
template <typename T>
void router_backward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, const T* z_prev,
                     const RouterCache<T>& c, const T* dg, const T* dp_extra, const T* dz_next,
                     T* dx, T* dz_prev, MoeParams<T>& grad);

// Top-k of one row of scores, best first, ties to the lower index.
void top_k_row(const float* scores, int n, int k, int32_t* out);
void top_k_row(const double* scores, int n, int k, int32_t* out);

}  // namespace moepp
