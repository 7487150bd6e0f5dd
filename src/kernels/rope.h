// Rotary position embedding, Hugging Face LLaMA "rotate_half" convention:
// inv_freq_j = theta^(-2j/hd), angle = (pos / linear_factor) * inv_freq_j, and for the two
// halves (a, b) of a head: a' = a cos - b sin, b' = b cos + a sin. Applied in place; the
// backward rotates the gradient back in place (the rotation's transpose).
#pragma once
#include <cstdint>

namespace moepp {

struct RopeConfig {
  double theta = 10000.0;
  double linear_factor = 1.0;  // rope_scaling {type: linear, factor}
};

// x: [tokens, heads, head_dim], positions: [tokens].
template <typename T>
void rope_forward(T* x, const int32_t* positions, int64_t tokens, int64_t heads,
                  int64_t head_dim, const RopeConfig& cfg);

// Turns dL/d(rotated x) into dL/dx in place.
template <typename T>
void rope_backward(T* dx, const int32_t* positions, int64_t tokens, int64_t heads,
                   int64_t head_dim, const RopeConfig& cfg);

}  // namespace moepp
