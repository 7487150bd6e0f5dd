// Row-wise softmax over the last dimension, numerically stable (max subtracted).
// Backward functions in moepp accumulate (+=) into their gradient outputs.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);

// dx += y * (dy - sum(dy * y)), with y the forward output.
template <typename T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

}  // namespace moepp
