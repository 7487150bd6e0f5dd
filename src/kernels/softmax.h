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

// exp(x[i] - mx) in place for i < n; returns their sum (the f32 form 16 lanes at a time).
float exp_shifted(float* x, int64_t n, float mx);
double exp_shifted(double* x, int64_t n, double mx);

// One row's softmax in place (n >= 1): x[i] = exp(x[i] - max) * (1 / sum), as attention
// turns a row's scores into probabilities.
void softmax_in_place(float* x, int64_t n);
void softmax_in_place(double* x, int64_t n);

}  // namespace moepp
