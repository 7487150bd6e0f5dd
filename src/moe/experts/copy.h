// The copy expert (MoE++ "skip"): out = x. No parameters, no GEMM.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
inline void copy_expert_forward(const T* x, int64_t D, T gate, T* y) {
  for (int64_t d = 0; d < D; ++d) y[d] += gate * x[d];
}

// dx += gate * dy (the gate's own gradient is <dy, x>, taken by the caller).
template <typename T>
inline void copy_expert_backward(const T* dy, int64_t D, T gate, T* dx) {
  for (int64_t d = 0; d < D; ++d) dx[d] += gate * dy[d];
}

}  // namespace moepp
