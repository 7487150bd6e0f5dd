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
  float b1, b2, step, inv_bc2, eps, decay, grad_scale;
};

#if defined(__AVX512F__)
constexpr uintptr_t kAheadBytes = 2048;

// The address `bytes` past p, formed as an integer: it may lie past the array's end.
template <_mm_hint kHint>
inline void prefetch_ahead(const void* p, uintptr_t bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + bytes), kHint);
}
#endif

// One AdamW update of n elements, written out so it runs 16 lanes at a time: the compiler
// keeps std::sqrt scalar (it may set errno), which made the update compute-bound. Every
// element, the ragged tail's too, goes through the same arithmetic, so a result does not
// depend on where a chunk boundary falls.
void adamw_elements(float* w, const float* g, float* m, float* v, int64_t n, const AdamWStep& s, uint16_t* w16) {
#if defined(__AVX512F__)
  const __m512 b1 = _mm512_set1_ps(s.b1), c1 = _mm512_set1_ps(1 - s.b1), b2 = _mm512_set1_ps(s.b2),
               c2 = _mm512_set1_ps(1 - s.b2), step = _mm512_set1_ps(s.step), inv_bc2 = _mm512_set1_ps(s.inv_bc2),
               eps = _mm512_set1_ps(s.eps), decay = _mm512_set1_ps(s.decay), grad_scale = _mm512_set1_ps(s.grad_scale);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = tail_mask16(n - j);
    // Five streams a thread are more than the hardware prefetcher keeps ahead of: asking for
    // each one's line 2 KB on (the bf16 copy's for writing) took the update from ~56 to
    // ~70 GB/s here. A prefetch past the end of an array is harmless (it never faults).
    prefetch_ahead<_MM_HINT_T0>(g + j, kAheadBytes);
    prefetch_ahead<_MM_HINT_T0>(m + j, kAheadBytes);
    prefetch_ahead<_MM_HINT_T0>(v + j, kAheadBytes);
    prefetch_ahead<_MM_HINT_T0>(w + j, kAheadBytes);
    if (w16 && (j & 31) == 0) prefetch_ahead<_MM_HINT_ET0>(w16 + j, kAheadBytes / 2);
    const __m512 gj = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g + j), grad_scale);
    const __m512 mj = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(k, m + j), _mm512_mul_ps(c1, gj));
    const __m512 vj = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(k, v + j), _mm512_mul_ps(_mm512_mul_ps(c2, gj), gj));
    // The zero-masking form with every lane kept: GCC 12's plain sqrt warns (kernels/vec_math.h).
    const __m512 den = _mm512_add_ps(_mm512_maskz_sqrt_ps(__mmask16(0xFFFF), _mm512_mul_ps(vj, inv_bc2)), eps);
    const __m512 wj = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + j), decay),
                                    _mm512_div_ps(_mm512_mul_ps(step, mj), den));
    _mm512_mask_storeu_ps(m + j, k, mj);
    _mm512_mask_storeu_ps(v + j, k, vj);
    _mm512_mask_storeu_ps(w + j, k, wj);
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    // Rounded from the register (as round_to_bf16 rounds 16 at a time), not in a second pass.
    if (w16) _mm256_mask_storeu_epi16(w16 + j, k, __m256i(_mm512_cvtneps_pbh(wj)));
#endif
  }
#if !(defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__))
  if (w16) round_to_bf16(w, n, w16);  // the chunk's new values, still in L1/L2
#endif
#else
  for (int64_t j = 0; j < n; ++j) {
    const float gj = g[j] * s.grad_scale;
    m[j] = std::fma(s.b1, m[j], (1 - s.b1) * gj);
    v[j] = std::fma(s.b2, v[j], (1 - s.b2) * gj * gj);
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
                   const std::unordered_set<const Tensor<float>*>& skip, Bf16Shadow* rounded, float grad_scale) {
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
                      decays(name) ? float(1.0 - lr * opt_.weight_decay) : 1.0f, grad_scale};
    constexpr int64_t kChunk = 1 << 14;
    const int64_t n = p.numel();
    uint16_t* const w16 = rounded ? rounded->copy_of(w, n) : nullptr;
    // A memory-bound stream: with fixed halves one thread waited on the other at every
    // tensor's end; stealing the last chunks took 3-7% off the update (small preset).
    parallel_for_stealing((n + kChunk - 1) / kChunk, [&](int64_t c) {
      const int64_t j = c * kChunk;
      adamw_elements(w + j, g + j, m + j, v + j, std::min(kChunk, n - j), s, w16 ? w16 + j : nullptr);
    });
  });
}

double squared_norm(const Tensor<float>& t) {
  const float* g = t.data();
  const int64_t n = t.numel();
  // Four vector registers of running sums per thread (each element squared and added in
  // double): the sums of one register are a chain of dependent additions, 4 cycles each,
  // which held a 62 MB gradient to 14 GB/s; four chains let the read run at memory speed.
  constexpr int64_t kBlock = 32;
  const int64_t blocks = n / kBlock;
  double sq = 0;
#pragma omp parallel reduction(+ : sq) if (n > (1 << 16))
  {
#if defined(__AVX512F__)
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* p = g + b * kBlock;
      for (int r = 0; r < 4; ++r) {
        // (The zero-masking forms with every lane kept: GCC 12's plain ones warn, kernels/vec_math.h.)
        const __m512d x = _mm512_maskz_cvtps_pd(__mmask8(0xFF), _mm256_loadu_ps(p + 8 * r));
        acc[r] = _mm512_fmadd_pd(x, x, acc[r]);
      }
    }
    alignas(64) double lanes[8];
    _mm512_store_pd(lanes, _mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3])));
    for (double v : lanes) sq += v;
#else
    double lane[kBlock] = {};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t l = 0; l < kBlock; ++l) lane[l] += double(g[b * kBlock + l]) * double(g[b * kBlock + l]);
    for (double v : lane) sq += v;
#endif
  }
  for (int64_t j = blocks * kBlock; j < n; ++j) sq += double(g[j]) * double(g[j]);
  return sq;
}

double grad_norm(const ModelConfig& cfg, const ModelParams<float>& grads) {
  double sq = 0;
  grads.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { sq += squared_norm(t); });
  return std::sqrt(sq);
}

float clip_scale(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? float(max_norm / norm) : 1.0f;
}

}  // namespace moepp
