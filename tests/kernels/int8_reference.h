// The int8 products' arithmetic (kernels/int8_dot.h, kernels/amx_int8.h) written out in
// double for the tests, from the stored layouts' definitions (docs/quantization.md), not
// from the library's decoders.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <vector>

#include "kernels/int8_dot.h"
#include "test_util.h"

namespace moepp::test {

// The stored value of q4 weight i (its code minus 8), from the bytes.
inline int64_t q4_code(const PackedMatrix& p, int64_t i) {
  const int64_t block = i / 32, pos = i % 32;
  const uint8_t byte = p.nibbles[size_t(block * 16 + pos % 16)];
  return int64_t(pos < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
}

// The stored integer of weight i of a q4 or q8_0 matrix.
inline int64_t stored_code(const PackedMatrix& p, int64_t i) {
  return p.type == WeightType::q4 ? q4_code(p, i) : int64_t(p.q[size_t(i)]);
}

struct Int8Expected {
  double value = 0;      // sum over blocks of dx * dw * (exact integer block sum)
  double magnitude = 0;  // the same over |products|: bounds the rounding of any summation order
};

// Row m of quantized x against weight row j of p.
inline Int8Expected int8_expected(const Int8Rows& q, const PackedMatrix& p, int64_t m, int64_t j) {
  const int64_t K = p.cols;
  Int8Expected e;
  for (int64_t b = 0; b < K / 32; ++b) {
    int64_t isum = 0, iabs = 0;  // exact
    for (int64_t i = 0; i < 32; ++i) {
      const int64_t product = int64_t(q.q[size_t(m * K + b * 32 + i)]) * stored_code(p, j * K + b * 32 + i);
      isum += product;
      iabs += std::abs(product);
    }
    const double scale = double(q.scales[size_t(m * K / 32 + b)]) * p.scale(j * K / 32 + b);
    e.value += scale * double(isum);
    e.magnitude += std::fabs(scale) * double(iabs);
  }
  return e;
}

// The worst error of a product of x's M rows (quantized as q) against p, written into got
// [M, ldy] over `before` (what y held; added to when acc): against int8_expected, relative
// to the magnitude of its terms. Also checks that the padding columns past p.rows are left
// alone and, without acc, that each row equals `alone` (that row multiplied on its own)
// bit for bit: a row's result must not depend on the rows beside it.
inline double int8_product_error(const Int8Rows& q, const PackedMatrix& p, const float* got, const float* before,
                                 const float* alone, int64_t M, int64_t ldy, bool acc) {
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t j = 0; j < ldy; ++j) {
      const int64_t at = m * ldy + j;
      if (j >= p.rows) {
        EXPECT_EQ(got[at], before[at]) << "padding of y is left alone";
        continue;
      }
      const Int8Expected e = int8_expected(q, p, m, j);
      const double base = acc ? double(before[at]) : 0.0;
      worst = std::max(worst, std::fabs(got[at] - base - e.value) / (1e-30 + e.magnitude + std::fabs(base)));
      if (!acc) {
        EXPECT_EQ(got[at], alone[at]) << "row " << m << " of " << M;
      }
    }
  return worst;
}

// A kernel under test: rows [0, M) of x (row stride ldx) times p into y [M, ldy], added
// to y when acc.
using Int8Product = std::function<void(const float* x, int64_t M, int64_t ldx, const PackedMatrix& p, float* y,
                                       int64_t ldy, bool acc)>;

// `product` on a random [N, K] matrix of `type` (x of Mmax rows, row strides K + 3 and
// N + 5), for each row count in Ms, with and without accumulation: within 1e-5 of the
// int8 arithmetic (int8_product_error, which also holds each row to its result alone).
inline void expect_int8_products(const Int8Product& product, WeightType type, int64_t K, int64_t N, int64_t Mmax,
                                 std::initializer_list<int64_t> Ms, Rng& rng) {
  const int64_t ldx = K + 3, ldy = N + 5;
  auto w = random_tensor<float>({N, K}, rng);
  auto x = random_tensor<float>({Mmax, ldx}, rng);
  const auto p = PackedMatrix::pack(w.data(), N, K, type);
  std::vector<float> alone(size_t(Mmax * ldy));  // each row multiplied on its own
  for (int64_t m = 0; m < Mmax; ++m) product(x.data() + m * ldx, 1, ldx, p, alone.data() + m * ldy, ldy, false);
  for (int64_t M : Ms)
    for (bool acc : {false, true}) {
      auto y = random_tensor<float>({M, ldy}, rng);
      std::vector<float> got(y.data(), y.data() + y.numel());
      product(x.data(), M, ldx, p, got.data(), ldy, acc);
      Int8Rows q;
      quantize_rows_int8(x.data(), M, ldx, K, q, type);
      const double worst = int8_product_error(q, p, got.data(), y.data(), alone.data(), M, ldy, acc);
      EXPECT_LT(worst, 1e-5) << weight_type_name(type) << " K " << K << " N " << N << " M " << M << " acc " << acc;
    }
}

}  // namespace moepp::test
