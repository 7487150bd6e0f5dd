// The constant expert (MoE++ "replace"): out = a0 x + a1 v with [a0, a1] = softmax(Wc x),
// a learned vector v [D] and Wc [2, D]. One row at a time: it costs O(D), never a GEMM.
#pragma once
#include <cstdint>

namespace moepp {

// Writes a[2] and, when out is not null, out[D].
template <typename T>
void constant_forward(const T* x, const T* v, const T* wc, int64_t D, T* a, T* out);

// The gradient w.r.t. out is gate * dy (the slot's share of the layer output's gradient);
// dy_x = <dy, x> and dy_v = <dy, v> (v the constant vector), which the caller takes anyway
// for the gate's own gradient, so dy is read once per slot and v not at all here. dx [D],
// dv [D], dwc [2, D] += their gradients; the three must not overlap each other or the inputs.
template <typename T>
void constant_backward(const T* x, const T* wc, const T* a, const T* dy, T gate, double dy_x, double dy_v, int64_t D,
                       T* dx, T* dv, T* dwc);

}  // namespace moepp
