#include "train/optimizer.h"

#include <cmath>
#include <vector>

#include "core/parallel.h"

namespace moepp {

bool decays(const std::string& name) {
  const bool norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight";
  const bool constant = name.size() >= 9 && name.compare(name.size() - 9, 9, ".constant") == 0;
  return !norm && !constant;
}

AdamW::AdamW(const ModelConfig& cfg, AdamWConfig opt)
    : opt_(opt), m_(ModelParams<float>::zeros(cfg)), v_(ModelParams<float>::zeros(cfg)) {}

void AdamW::update(const ModelConfig& cfg, ModelParams<float>& params, ModelParams<float>& grads, double lr,
                   const std::unordered_set<const Tensor<float>*>& skip) {
  ++step_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(step_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(step_));
  std::vector<Tensor<float>*> gs, ms, vs;
  grads.for_each(cfg, [&](const std::string&, Tensor<float>& t) { gs.push_back(&t); });
  m_.for_each(cfg, [&](const std::string&, Tensor<float>& t) { ms.push_back(&t); });
  v_.for_each(cfg, [&](const std::string&, Tensor<float>& t) { vs.push_back(&t); });
  size_t i = 0;
  params.for_each(cfg, [&](const std::string& name, Tensor<float>& p) {
    float* w = p.data();
    const float* g = gs[i]->data();
    float* m = ms[i]->data();
    float* v = vs[i]->data();
    ++i;
    if (skip.count(&p)) return;
    const float b1 = float(opt_.beta1), b2 = float(opt_.beta2);
    const float step = float(lr / bc1), inv_bc2 = float(1.0 / bc2), eps = float(opt_.eps);
    const float decay = decays(name) ? float(1.0 - lr * opt_.weight_decay) : 1.0f;
    parallel_for(p.numel(), [&](int64_t j) {
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
      w[j] = w[j] * decay - step * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
    }, 1 << 15);
  });
}

double squared_norm(const Tensor<float>& t) {
  const float* g = t.data();
  const int64_t n = t.numel();
  double sq = 0;
#pragma omp parallel for reduction(+ : sq) schedule(static) if (n > (1 << 16))
  for (int64_t j = 0; j < n; ++j) sq += double(g[j]) * double(g[j]);
  return sq;
}

double clip_grad_norm(const ModelConfig& cfg, ModelParams<float>& grads, double max_norm) {
  double sq = 0;
  grads.for_each(cfg, [&](const std::string&, Tensor<float>& t) { sq += squared_norm(t); });
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const float s = float(max_norm / norm);
    grads.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
      float* g = t.data();
      parallel_for(t.numel(), [&](int64_t j) { g[j] *= s; }, 1 << 16);
    });
  }
  return norm;
}

}  // namespace moepp
