#include "kernels/int8_tiles.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"

namespace moepp {

void quantize_rows_for_tiles(const float* x, int64_t M, int64_t ldx, int64_t K, TileRows& out) {
  MOEPP_CHECK(K % kQ8Block == 0, "quantize_rows_for_tiles: ", K, " columns, not a multiple of ", kQ8Block);
  constexpr int64_t G = TileRows::kGroup;
  const int64_t blocks = K / kQ8Block, groups = (M + G - 1) / G;
  out.rows = M;
  out.cols = K;
  out.tiles.resize(size_t(groups * blocks * TileRows::kTileBytes));
  out.scales.resize(size_t(groups * blocks * G));
  out.sums.resize(size_t(groups * blocks * G));
  if (M % G) {  // rows past M in the last group are zeros; every other byte is written below
    std::fill(out.tiles.begin() + (groups - 1) * blocks * TileRows::kTileBytes, out.tiles.end(), int8_t(0));
    std::fill(out.scales.begin() + (groups - 1) * blocks * G, out.scales.end(), 0.0f);
    std::fill(out.sums.begin() + (groups - 1) * blocks * G, out.sums.end(), 0);
  }
  // A prompt's rows are worth both threads; a decode step's few are not worth waking them.
  const int64_t min_parallel = M * K >= (int64_t(1) << 16) ? 2 : M + 1;
  parallel_for(
      M,
      [&](int64_t m) {
        const int64_t g = m / G, lane = m % G;
        int8_t q[kQ8Block];
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t tile = g * blocks + b;
          // Quantized exactly as quantize_rows_int8 quantizes a row: a row's products do
          // not depend on which kernel, or which batch, it went through.
          out.scales[size_t(tile * G + lane)] = encode_q8_0_block(x + m * ldx + b * kQ8Block, q);
          int32_t sum = 0;
          for (int i = 0; i < kQ8Block; ++i) sum += q[i];
          out.sums[size_t(tile * G + lane)] = sum;
          int8_t* t = out.tiles.data() + tile * TileRows::kTileBytes + 4 * lane;
          for (int r = 0; r < 8; ++r) std::memcpy(t + 64 * r, q + 4 * r, 4);
        }
      },
      min_parallel);
}

}  // namespace moepp
