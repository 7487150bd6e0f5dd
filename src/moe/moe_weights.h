// MoeWeights: what the forward of one MoE++ layer reads. The router, gate map and constant
// experts come from a MoeParams (always dense: small, and routing must not move with
// quantisation); each FFN expert's up [2I, D] and down [D, I] matrices are views, dense
// (training: the MoeParams' own tensors) or packed (inference: a PackedModel's bf16 / q8_0
// / f32-panel matrices). The view owns nothing.
#pragma once
#include <vector>

#include "kernels/linear.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp {

template <typename T>
struct MoeWeights {
  const MoeParams<T>* params = nullptr;
  std::vector<MatrixView<T>> up, down;  // per FFN expert

  // The layer as trained: p's own experts, dense.
  static MoeWeights of(const MoeParams<T>& p) {
    MoeWeights w;
    w.params = &p;
    for (const auto& t : p.up) w.up.push_back(MatrixView<T>::of_dense(t.data(), t.dim(0), t.dim(1)));
    for (const auto& t : p.down) w.down.push_back(MatrixView<T>::of_dense(t.data(), t.dim(0), t.dim(1)));
    return w;
  }
  bool packed() const { return !up.empty() && up[0].packed; }

  // Throws moepp::Error naming the first tensor or expert that contradicts cfg. Experts
  // outside [first_held, first_held + held) may be absent (their shape still has to match):
  // an expert-parallel rank holds only its own (moe/expert_parallel.h).
  void check_shapes(const MoeConfig& cfg, int first_held = 0, int held = -1) const;
};

}  // namespace moepp
