// The int8 products' arithmetic (kernels/int8_dot.h, kernels/amx_int8.h) written out in
// double for the tests, from the stored layouts' definitions (docs/quantization.md), not
// from the library's decoders.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/int8_dot.h"

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

}  // namespace moepp::test
