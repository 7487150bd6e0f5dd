// SwiGLU on the fused up projection: u = [a | b] with a, b of width I per row,
// h = silu(a) * b, silu(a) = a * sigmoid(a). This is the FFN expert's non-linearity.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
void swiglu_forward(const T* u, T* h, int64_t rows, int64_t I);

// du += dL/du (both halves); with accumulate = false, du = dL/du (du's old contents are
// not read: no zeroing pass first).
template <typename T>
void swiglu_backward(const T* u, const T* dh, T* du, int64_t rows, int64_t I, bool accumulate = true);

}  // namespace moepp
