// AdamW with decoupled weight decay, on f32 master weights. Norm weights and the constant
// experts' vectors are not decayed (they are scales and offsets, not projections).
// Moments live in ModelParams of the same shapes, so checkpoints store them by name.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_set>

#include "kernels/mixed_precision.h"
#include "model/config.h"
#include "model/params.h"

namespace moepp {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

bool decays(const std::string& param_name);

class AdamW {
 public:
  AdamW(const ModelConfig& cfg, AdamWConfig opt);
  // One update with learning rate lr; step() counts updates (bias correction uses it).
  // Parameters in `skip` (and their moments) are left as they are: an expert-parallel rank
  // skips the experts other ranks own, whose gradients it never sees.
  // With `rounded`, each updated tensor that is one of its spans also gets its new values
  // rounded to bf16 into the span's copy, in the same pass (train --precision bf16: the
  // next step's weight operands, without a second pass over the weights).
  // Gradients are read as grad_scale * g (clipping: clip_scale), so that clipping costs no
  // pass over the gradients of its own.
  void update(const ModelConfig& cfg, ModelParams<float>& params, ModelParams<float>& grads, double lr,
              const std::unordered_set<const Tensor<float>*>& skip = {}, Bf16Shadow* rounded = nullptr,
              float grad_scale = 1.0f);
  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  ModelParams<float>& m() { return m_; }
  ModelParams<float>& v() { return v_; }

 private:
  AdamWConfig opt_;
  ModelParams<float> m_, v_;
  int64_t step_ = 0;
};

// sum of t[i]^2, in double.
double squared_norm(const Tensor<float>& t);

// The global L2 norm of the gradients (sums in double).
double grad_norm(const ModelConfig& cfg, const ModelParams<float>& grads);
// The factor that brings gradients of norm `norm` to at most max_norm: max_norm / norm
// when max_norm > 0 and the norm is above it, else 1. (Clipping: AdamW::update's grad_scale.)
float clip_scale(double norm, double max_norm);


}  // namespace moepp
