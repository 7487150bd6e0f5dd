// Sampler: picks the next token from logits with temperature, top-k and top-p (nucleus),
// from a seeded RNG. Temperature 0 is greedy (argmax, ties to the lower id). A NaN or
// infinite logit is an error (moepp::Error), never a token.
#pragma once
#include <cstdint>

#include "core/rng.h"

namespace moepp {

struct SamplerOptions {
  double temperature = 0.8;
  int top_k = 40;       // 0: no limit
  double top_p = 0.95;  // 1: no limit
  uint64_t seed = 1;
  // Drops tokens less likely than min_p times the most likely one (after temperature, top-k
  // and top-p); 0: off.
  double min_p = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions o);
  int32_t sample(const float* logits, int64_t vocab);

 private:
  SamplerOptions opt_;
  Rng rng_;
};

}  // namespace moepp
