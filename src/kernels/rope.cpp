#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

namespace {

// sign = +1 rotates forward, -1 rotates back.
template <typename T>
void rotate(T* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t hd,
            const RopeConfig& cfg, T sign) {
  MOEPP_CHECK(hd % 2 == 0, "rope: head_dim ", hd, " must be even");
  const int64_t half = hd / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j)
    inv_freq[size_t(j)] = std::pow(cfg.theta, -2.0 * double(j) / double(hd));
  parallel_for(tokens, [&](int64_t t) {
    const double pos = double(positions[t]) / cfg.linear_factor;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = pos * inv_freq[size_t(j)];
      const T c = T(std::cos(angle)), s = sign * T(std::sin(angle));
      for (int64_t h = 0; h < heads; ++h) {
        T* row = x + (t * heads + h) * hd;
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
