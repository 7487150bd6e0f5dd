// FFN experts (SwiGLU with the fused up projection [2I, D]) run as grouped GEMMs over the
// contiguous block of gathered FFN rows: expert e owns rows [offsets[e], offsets[e+1]).
//   U = X up_e^T [M, 2I];  H = silu(U[:, :I]) * U[:, I:] [M, I];  O = H down_e^T [M, D]
#pragma once
#include <cstdint>

#include "core/grad_mode.h"
#include "core/tensor.h"
#include "moe/dispatch.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_weights.h"

namespace moepp {

template <typename T>
struct FfnCache {
  Tensor<T> x;  // [R, D] gathered inputs
  Tensor<T> u;  // [R, 2I]
  Tensor<T> h;  // [R, I]
  Tensor<T> o;  // [R, D] expert outputs (unweighted)
  int64_t gemm_rows = 0;  // rows fed to the GEMMs in the last forward (= FFN slots)
};

// Expects cache.x filled (gather_ffn_rows); fills u, h, o. Dense experts run as grouped
// GEMMs; packed ones as one packed product per expert (each weight read once). A packed
// expert with rows enough for the bf16 GEMM fills its rows of o only: its intermediates
// stay in scratch (packed weights are never trained, so nothing reads u and h back).
template <typename T>
void ffn_experts_forward(const MoeConfig& cfg, const MoeWeights<T>& w, const DispatchPlan& plan,
                         FfnCache<T>& cache);

// do_ [R, D] gradient w.r.t. o; writes dx [R, D] (overwritten) and the experts' up/down
// gradients as `mode` says (overwrite: an expert without rows gets zeros). dh and du are
// caller scratch [R, I] and [R, 2I].
template <typename T>
void ffn_experts_backward(const MoeConfig& cfg, const MoeParams<T>& w, const DispatchPlan& plan,
                          const FfnCache<T>& cache, const T* do_, T* dh, T* du, T* dx,
                          MoeParams<T>& grad, GradMode mode = GradMode::accumulate);

}  // namespace moepp
