// What the few-row products (kernels/quant.cpp: f32 activations; kernels/int8_dot.cpp: int8
// activations) share: the walk over weight rows that stores M x J blocks of outputs, the
// dispatch of a runtime row count to a compile-time one, and how far ahead they fetch
// weights.
#pragma once
#include <cstdint>

namespace moepp {

// Weights are fetched this far ahead of use: decode reads them from memory, and with two
// threads the hardware prefetcher alone left a third of the bandwidth unused (model decode
// 1.12-1.5x faster with it, by format; 768 and 1536 bytes measured the same for q4).
constexpr int64_t kWeightPrefetchBytes = 768;

// y[m, j] (+)= the products for m < M and j in [j0, j1): J weight rows at a time, the rest
// one by one. dot.template operator()<JB>(j, out) writes out[m * JB + i] for weight rows j
// to j + JB - 1.
template <int M, int J, typename Dot>
void for_row_blocks(int64_t j0, int64_t j1, float* y, int64_t ldy, bool accumulate, const Dot& dot) {
  float out[M * J];
  const auto store = [&](int64_t j, int rows) {
    for (int m = 0; m < M; ++m)
      for (int i = 0; i < rows; ++i) {
        float& dst = y[m * ldy + j + i];
        dst = accumulate ? dst + out[m * rows + i] : out[m * rows + i];
      }
  };
  int64_t j = j0;
  for (; j + J <= j1; j += J) {
    dot.template operator()<J>(j, out);
    store(j, J);
  }
  for (; j < j1; ++j) {
    dot.template operator()<1>(j, out);
    store(j, 1);
  }
}

// fn.template operator()<R>() with R = rows, 1 <= rows <= 8 (more is taken as 8).
template <typename Fn>
void with_row_count(int64_t rows, const Fn& fn) {
  switch (rows) {
    case 1: fn.template operator()<1>(); break;
    case 2: fn.template operator()<2>(); break;
    case 3: fn.template operator()<3>(); break;
    case 4: fn.template operator()<4>(); break;
    case 5: fn.template operator()<5>(); break;
    case 6: fn.template operator()<6>(); break;
    case 7: fn.template operator()<7>(); break;
    default: fn.template operator()<8>(); break;
  }
}

}  // namespace moepp
