#include "moe_twins.h"

#include <cmath>

#include "moe/router.h"

namespace moepp::bench {

MoeConfig released_moe_layer(int64_t hidden, int64_t intermediate, int ffn_experts, bool moepp) {
  MoeConfig c;
  c.hidden = hidden;
  c.intermediate = intermediate;
  c.num_ffn = ffn_experts;
  c.num_constant = moepp ? 2 : 0;
  c.num_copy = moepp ? 1 : 0;
  c.num_zero = moepp ? 1 : 0;
  c.top_k = 2;
  c.gate_weights = GateWeights::official;
  c.logits_norm = true;
  c.norm_std = 1.0;
  c.scale_inputs = false;
  return c;
}

void set_zc_bias(const MoeConfig& cfg, MoeParams<float>& w, float bias) {
  const int E = cfg.num_experts();
  w.gate_map.zero();
  for (int e = cfg.num_ffn; e < E; ++e) w.gate_map[e * E + e] = bias;
}

double zc_fraction(const MoeConfig& cfg, const MoeParams<float>& w, const Tensor<float>& x,
                   const Tensor<float>& ones, int64_t tokens) {
  RouterCache<float> rc;
  router_forward(cfg, w, x.data(), tokens, ones.data(), rc);
  int64_t zc = 0;
  for (auto e : rc.idx) zc += e >= cfg.num_ffn;
  return double(zc) / double(rc.idx.size());
}

double calibrate_zc(const MoeConfig& cfg, MoeParams<float>& w, const Tensor<float>& x,
                    const Tensor<float>& ones, int64_t tokens, double target) {
  double lo = -20, hi = 20, frac = 0;
  for (int it = 0; it < 40; ++it) {
    const double mid = 0.5 * (lo + hi);
    set_zc_bias(cfg, w, float(mid));
    frac = zc_fraction(cfg, w, x, ones, tokens);
    if (std::fabs(frac - target) < 0.01) return frac;
    (frac < target ? lo : hi) = mid;
  }
  return frac;
}

}  // namespace moepp::bench
