// Dot products of rows of length D (the hidden size), one row against one or two others:
// the per-slot work of the gate gradients and the constant experts, which never reach a
// GEMM. A plain loop `acc += a[i] * b[i]` is one serial chain of D dependent additions
// (~6k cycles at D = 1536: several ms per layer over every slot), and without fast-math
// the compiler may not split it. These keep 16 independent partial sums, which also round
// no worse than one running sum. Acc is the accumulation type: float, or double where a
// difference of dot products must not cancel (constant_backward).
#pragma once
#include <cstdint>

namespace moepp {

// sum_i a[i] b[i], in 16 partial sums of type Acc.
template <typename Acc, typename T>
Acc dot(const T* a, const T* b, int64_t n);

// (x . p, x . q) in one pass over x, each in 16 partial sums of type Acc.
template <typename Acc, typename T>
void two_dots(const T* x, const T* p, const T* q, int64_t n, Acc& xp, Acc& xq);

}  // namespace moepp
