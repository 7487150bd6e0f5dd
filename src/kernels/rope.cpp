#include "kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

namespace {

// cos and sin of every position's angles, per thread and element type: they depend on the
// position alone, and training rotated the same positions four times a layer (q, k and
// their gradients) for every sequence of the batch, computing each pair again in double
// (1.8% of a training step). Rows cover positions [0, rows); positions at or past
// kMaxTablePositions are computed as before, unstored.
constexpr int64_t kMaxTablePositions = int64_t(1) << 16;

template <typename T>
struct RopeTable {
  double theta = 0, linear_factor = 0;
  int64_t half = 0, rows = 0;
  std::vector<T> cos, sin;  // [rows, half]
};

template <typename T>
T angle_cos(double pos, double inv_freq) { return T(std::cos(pos * inv_freq)); }
template <typename T>
T angle_sin(double pos, double inv_freq) { return T(std::sin(pos * inv_freq)); }

// The table for cfg and head size 2 * half, extended to cover `rows` positions.
template <typename T>
const RopeTable<T>& rope_table(const RopeConfig& cfg, int64_t half, const std::vector<double>& inv_freq, int64_t rows) {
  thread_local RopeTable<T> table;
  if (table.theta != cfg.theta || table.linear_factor != cfg.linear_factor || table.half != half) {
    table = RopeTable<T>{cfg.theta, cfg.linear_factor, half, 0, {}, {}};
  }
  if (rows > table.rows) {
    table.cos.resize(size_t(rows * half));
    table.sin.resize(size_t(rows * half));
    for (int64_t p = table.rows; p < rows; ++p)
      for (int64_t j = 0; j < half; ++j) {
        const double pos = double(p) / cfg.linear_factor;
        table.cos[size_t(p * half + j)] = angle_cos<T>(pos, inv_freq[size_t(j)]);
        table.sin[size_t(p * half + j)] = angle_sin<T>(pos, inv_freq[size_t(j)]);
      }
    table.rows = rows;
  }
  return table;
}

// sign = +1 rotates forward, -1 rotates back.
template <typename T>
void rotate(T* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t hd,
            const RopeConfig& cfg, T sign) {
  MOEPP_CHECK(hd % 2 == 0, "rope: head_dim ", hd, " must be even");
  const int64_t half = hd / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    inv_freq[size_t(j)] = std::pow(cfg.theta, -2.0 * double(j) / double(hd));
  int64_t last = 0;
  for (int64_t t = 0; t < tokens; ++t) last = std::max<int64_t>(last, positions[t]);
  const int64_t rows = std::min(last + 1, kMaxTablePositions);
  // (Named through a reference: inside the workers the thread_local is their own.)
  const RopeTable<T>& table = rope_table<T>(cfg, half, inv_freq, rows);
  parallel_for(tokens, [&](int64_t t) {
    const int64_t p = positions[t];
    const T* cos_row = nullptr;
    const T* sin_row = nullptr;
    thread_local std::vector<T> unstored;  // a position past the table: its angles, computed here
    if (p >= 0 && p < table.rows) {
      cos_row = table.cos.data() + p * half;
      sin_row = table.sin.data() + p * half;
    } else {
      const double pos = double(p) / cfg.linear_factor;
      unstored.resize(size_t(2 * half));
      for (int64_t j = 0; j < half; ++j) {
        unstored[size_t(j)] = angle_cos<T>(pos, inv_freq[size_t(j)]);
        unstored[size_t(half + j)] = angle_sin<T>(pos, inv_freq[size_t(j)]);
      }
      cos_row = unstored.data();
      sin_row = unstored.data() + half;
    }
    // Head by head along the pairs, so the pairs of a row go a vector at a time (one pair
    // at a time, heads apart, had been 1.2% of a training step).
    for (int64_t h = 0; h < heads; ++h) {
      T* row = x + (t * heads + h) * hd;
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const T c = cos_row[j], s = sign * sin_row[j];
        const T a = row[j], b = row[j + half];
        row[j] = a * c - b * s;
        row[j + half] = b * c + a * s;
      }
    }
  }, 8);
}

}  // namespace

template <typename T>
void rope_forward(T* x, const int32_t* positions, int64_t tokens, int64_t heads,
                  int64_t head_dim, const RopeConfig& cfg) {
  rotate(x, positions, tokens, heads, head_dim, cfg, T(1));
}

template <typename T>
void rope_backward(T* dx, const int32_t* positions, int64_t tokens, int64_t heads,
                   int64_t head_dim, const RopeConfig& cfg) {
  rotate(dx, positions, tokens, heads, head_dim, cfg, T(-1));
}

template void rope_forward<float>(float*, const int32_t*, int64_t, int64_t, int64_t, const RopeConfig&);
template void rope_forward<double>(double*, const int32_t*, int64_t, int64_t, int64_t, const RopeConfig&);
template void rope_backward<float>(float*, const int32_t*, int64_t, int64_t, int64_t, const RopeConfig&);
template void rope_backward<double>(double*, const int32_t*, int64_t, int64_t, int64_t, const RopeConfig&);

}  // namespace moepp
