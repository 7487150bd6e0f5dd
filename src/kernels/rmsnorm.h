// RMSNorm: y = w * x / sqrt(mean(x^2) + eps), per row of D. The forward saves each row's
// 1/rms for the backward.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t D, T eps);

// dx += dL/dx, dw += dL/dw.
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw,
                      int64_t rows, int64_t D);

}  // namespace moepp
