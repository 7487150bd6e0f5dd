#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "kernels/quant.h"

#if defined(__AVX512F__)
#include "kernels/vec_math.h"
#endif

namespace moepp {

namespace {

struct AdamWStep {
  float b1, b2, step, inv_bc2, eps, decay;
};

// One AdamW update of n elements, written out so it runs 16 lanes at a time: the compiler
// keeps std::sqrt scalar (it may set errno), which made the update compute-bound. Every
// element, the ragged tail's too, goes through the same arithmetic, so a result does not
// depend on where a chunk boundary falls.
void adamw_elements(float* w, const float* g, float* m, float* v, int64_t n, const AdamWStep& s, uint16_t* w16) {
#if defined(__AVX512F__)
  const __m512 b1 = _mm512_set1_ps(s.b1), c1 = _mm512_set1_ps(1 - s.b1), b2 = _mm512_set1_ps(s.b2),
               c2 = _mm512_set1_ps(1 - s.b2), step = _mm512_set1_ps(s.step), inv_bc2 = _mm512_set1_ps(s.inv_bc2),
               eps = _mm512_set1_ps(s.eps), decay = _mm512_set1_ps(s.decay);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask16(n - j);
    const __m512 gj = _mm512_maskz_loadu_ps(k, g + j);
    const __m512 mj = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(k, m + j), _mm512_mul_ps(c1, gj));
    const __m512 vj = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(k, v + j), _mm512_mul_ps(_mm512_mul_ps(c2, gj), gj));
    // The zero-masking form with every lane kept: GCC 12's plain sqrt warns (kernels/vec_math.h).
    const __m512 den = _mm512_add_ps(_mm512_maskz_sqrt_ps(__mmask16(0xFFFF), _mm512_mul_ps(vj, inv_bc2)), eps);
    const __m512 wj = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + j), decay),
                                    _mm512_div_ps(_mm512_mul_ps(step, mj), den));
    _mm512_mask_storeu_ps(m + j, k, mj);
    _mm512_mask_storeu_ps(v + j, k, vj);
    _mm512_mask_storeu_ps(w + j, k, wj);
  }
  if (w16) round_to_bf16(w, n, w16);  // the chunk's new values, still in L1/L2
#else
  for (int64_t j = 0; j < n; ++j) {
    m[j] = std::fma(s.b1, m[j], (1 - s.b1) * g[j]);
    v[j] = std::fma(s.b2, v[j], (1 - s.b2) * g[j] * g[j]);
    w[j] = w[j] * s.decay - s.step * m[j] / (std::sqrt(v[j] * s.inv_bc2) + s.eps);
  }
  if (w16) round_to_bf16(w, n, w16);
#endif
}

}  // namespace

bool decays(const std::string& name) {
  const bool norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight";
  const bool constant = name.size() >= 9 && name.compare(name.size() - 9, 9, ".constant") == 0;
  return !norm && !constant;
}

AdamW::AdamW(const ModelConfig& cfg, AdamWConfig opt)
    : opt_(opt), m_(ModelParams<float>::zeros(cfg)), v_(ModelParams<float>::zeros(cfg)) {}

void AdamW::update(const ModelConfig& cfg, ModelParams<float>& params, ModelParams<float>& grads, double lr,
                   const std::unordered_set<const Tensor<float>*>& skip, Bf16Shadow* rounded) {
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
    const AdamWStep s{float(opt_.beta1), float(opt_.beta2), float(lr / bc1), float(1.0 / bc2), float(opt_.eps),
                      decays(name) ? float(1.0 - lr * opt_.weight_decay) : 1.0f};
    constexpr int64_t kChunk = 1 << 14;
    const int64_t n = p.numel();
    uint16_t* const w16 = rounded ? rounded->copy_of(w, n) : nullptr;
    parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c) {
      const int64_t j = c * kChunk;
      adamw_elements(w + j, g + j, m + j, v + j, std::min(kChunk, n - j), s, w16 ? w16 + j : nullptr);
    });
  });
}

double squared_norm(const Tensor<float>& t) {
  const float* g = t.data();
  const int64_t n = t.numel();
  // Eight running sums per thread: one sum is a chain of dependent double additions (4
  // cycles each), eight independent ones fill a vector register and the adder's pipeline.
  constexpr int kLanes = 8;
  double sq = 0;
#pragma omp parallel reduction(+ : sq) if (n > (1 << 16))
  {
    double lane[kLanes] = {};
    const int64_t blocks = n / kLanes;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      for (int l = 0; l < kLanes; ++l) lane[l] += double(g[b * kLanes + l]) * double(g[b * kLanes + l]);
    for (int l = 0; l < kLanes; ++l) sq += lane[l];
  }
  for (int64_t j = n / kLanes * kLanes; j < n; ++j) sq += double(g[j]) * double(g[j]);
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
