// Shared test helpers: random tensors, a plain double-precision GEMM to compare against,
// relative errors, the central finite-difference gradient check, and scratch folders.
#pragma once
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/quant.h"

namespace moepp::test {

// A new folder /tmp/PREFIX-XXXXXX, removed with everything in it when the test process
// exits: the tests' scratch does not pile up in /tmp run after run.
inline std::string scratch_dir(const std::string& prefix) {
  struct Registry {
    std::mutex mutex;
    std::vector<std::string> dirs;
    ~Registry() {
      for (const auto& d : dirs) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    }
  };
  static Registry registry;
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  MOEPP_CHECK(mkdtemp(tmpl.data()) != nullptr, "test: cannot create a scratch folder ", tmpl);
  std::lock_guard<std::mutex> lock(registry.mutex);
  registry.dirs.push_back(tmpl);
  return tmpl;
}

// Packed bf16 and q8_0 products of more than 8 rows round the activations to bf16 where the
// CPU multiplies bf16 and, for q8_0 and q4, lacks AMX-INT8 (kernels/quant.h,
// packed_products_use_bf16). On the test models, whose
// weights are deliberately large, that moves the logits by 1-1.7% (2^-9 relative per
// activation, as bf16 weights move them by ~1%); the tolerance allows about 2.5x that.
inline constexpr double kBf16ActivationTolerance = 4e-2;
// q4 products of up to 8 rows, and q8_0 ones on a CPU with AVX-512 VNNI (any rows of either
// on AMX-INT8), quantize the activations to int8 (kernels/int8_dot.h, packed_products_use_int8): half a step of
// amax/127 a value, which moves the test models' logits by ~3%; the tolerance allows about
// 2.4x that.
inline constexpr double kInt8ActivationTolerance = 7e-2;
// The same rows of x quantized to int8 the same way, multiplied by different kernels (the
// few-row one, AMX tiles: kernels/amx_int8.h), which sum the same block products in
// another f32 order (measured 2.6e-7 of the logits' scale on the batched-decode test model).
inline constexpr double kInt8SameRowsTolerance = 1e-5;

// The tolerance for a model's logits on `type` weights, n tokens at once, against the f32
// path on the same stored weights: `exact` where every product keeps x in f32. (An expert
// may get few rows of a many-token prefill: q4 prefills use int8 activations there.)
inline double activation_tolerance(WeightType type, int64_t n, double exact) {
  double tolerance = exact;
  if (packed_products_use_bf16(type, n)) tolerance = std::max(tolerance, kBf16ActivationTolerance);
  if (packed_products_use_int8(type, 1)) tolerance = std::max(tolerance, kInt8ActivationTolerance);
  return tolerance;
}

template <typename T>
void fill_normal(T* p, int64_t n, Rng& rng, double std = 1.0) {
  for (int64_t i = 0; i < n; ++i) p[i] = T(rng.normal() * std);
}

template <typename T>
Tensor<T> random_tensor(Shape s, Rng& rng, double std = 1.0) {
  Tensor<T> t(std::move(s));
  fill_normal(t.data(), t.numel(), rng, std);
  return t;
}

template <typename A, typename B>
Tensor<A> cast(const Tensor<B>& t) {
  Tensor<A> out(t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = A(t[i]);
  return out;
}

// ||a - b|| / ||b|| (b the reference); 0 when both are zero.
template <typename A, typename B>
double rel_error(const A* a, const B* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

template <typename A, typename B>
double rel_error(const Tensor<A>& a, const Tensor<B>& b) {
  EXPECT_EQ(a.numel(), b.numel());
  return rel_error(a.data(), b.data(), std::min(a.numel(), b.numel()));
}

// Relative L2 error over all of y [M, ldy] (the f32 result) against y0 (+)= x B in double,
// x [M, K] with row stride ldx and b_at(k, j) = B[k, j]; the columns past N must keep
// y0's values.
template <typename BAt>
double product_error_vs_naive(const Tensor<float>& y, const Tensor<double>& y0, const Tensor<double>& x, int64_t M,
                              int64_t K, int64_t N, int64_t ldx, int64_t ldy, bool accumulate, BAt b_at) {
  double num = 0, den = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < ldy; ++j) {
      double want = y0[m * ldy + j];
      if (j < N) {
        double dot = 0;
        for (int64_t k = 0; k < K; ++k) dot += x[m * ldx + k] * b_at(k, j);
        want = (accumulate ? want : 0.0) + dot;
      }
      const double got = y[m * ldy + j];
      num += (got - want) * (got - want);
      den += want * want;
    }
  return std::sqrt(num / den);
}

// C = op(A) op(B), all double, the obvious triple loop.
inline void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A,
                       const double* B, double* C) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < K; ++p)
        acc += (ta ? A[p * M + i] : A[i * K + p]) * (tb ? B[j * K + p] : B[p * N + j]);
      C[i * N + j] = acc;
    }
}

// Central finite differences with the fourth-order five-point stencil: a step of 1e-3
// keeps rounding noise near 1e-13 of the loss (small gradients next to a large loss stay
// measurable) while the truncation error stays near eps^4 = 1e-12. Compared with the
// analytic gradient: ||fd - grad|| / ||fd|| < tol.
//
// A piecewise-smooth loss (top-k routing) is differentiable only where the branch stays
// fixed: when same_branch is given and a step leaves the branch, that element is retried
// with steps 10x smaller, down to 1e-6.
inline void expect_fd_gradient(const std::string& what, double* param, const double* grad,
                               int64_t n, const std::function<double()>& loss,
                               double tol = 1e-6, double eps = 1e-3,
                               const std::function<bool()>& same_branch = {}) {
  std::vector<double> fd(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double keep = param[i];
    for (double h = eps;; h /= 10) {
      bool left_branch = false;
      auto at = [&](double step) {
        param[i] = keep + step;
        const double l = loss();
        if (same_branch && !same_branch()) left_branch = true;
        return l;
      };
      const double l2p = at(2 * h), l1p = at(h), l1m = at(-h), l2m = at(-2 * h);
      param[i] = keep;
      fd[size_t(i)] = (-l2p + 8 * l1p - 8 * l1m + l2m) / (12 * h);
      if (!left_branch) break;
      ASSERT_GT(h, 1e-6) << what << "[" << i << "]: routing changes under every step down to 1e-6";
    }
  }
  double fd_norm = 0;
  for (double v : fd) fd_norm += v * v;
  EXPECT_GT(std::sqrt(fd_norm), 1e-10) << what << ": gradient is identically zero, the check would be vacuous";
  EXPECT_LT(rel_error(grad, fd.data(), n), tol) << what;
}

// fn must throw moepp::Error whose message contains needle.
inline void expect_error_mentioning(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace moepp::test
