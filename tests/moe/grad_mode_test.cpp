// GradMode::overwrite: a backward that writes its parameter gradients over whatever the
// buffers hold must give what accumulating into zeroed buffers gives, for every tensor of
// every layer: FFN experts with and without rows, the constant experts, the router (linear
// and 2-layer) and the gate map, with and without an incoming gating residual.
#include <gtest/gtest.h>

#include "moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {

template <typename T>
void check_overwrite_matches_accumulate(bool two_layer, double tol) {
  const MoeConfig cfg = wide_moe_config(two_layer);
  MoeStack<T> s(cfg, 3, 24);
  // A seed where some layer leaves an FFN expert without rows (its gradient must come
  // out zero) while every zero-computation expert gets slots somewhere.
  auto wanted_routing = [&] {
    bool empty_ffn = false;
    std::vector<bool> zc_used(size_t(cfg.num_experts()), false);
    for (const auto& c : s.caches)
      for (int e = 0; e < cfg.num_experts(); ++e) {
        if (e < cfg.num_ffn && c.plan.rows(e) == 0) empty_ffn = true;
        if (c.plan.rows(e) > 0) zc_used[size_t(e)] = true;
      }
    for (int e = cfg.num_ffn; e < cfg.num_experts(); ++e)
      if (!zc_used[size_t(e)]) return false;
    return empty_ffn;
  };
  uint64_t seed = 3;
  for (; seed < 300; ++seed) {
    s.randomize(seed);
    s.forward();
    if (wanted_routing()) break;
  }
  ASSERT_TRUE(wanted_routing()) << "no seed leaves an FFN expert empty with every kind used";

  Tensor<T> dx, dz;
  s.backward(dx, dz, GradMode::accumulate);
  std::vector<MoeParams<T>> want;
  for (auto& g : s.grads) {
    want.push_back(MoeParams<T>::zeros(cfg));
    auto src = tensors_of(cfg, g), dst = tensors_of(cfg, want.back());
    for (size_t i = 0; i < src.size(); ++i) *dst[i] = src[i]->clone();
  }
  // Stale values the overwrite must not leave behind or add to.
  Rng rng(seed + 1000);
  for (auto& g : s.grads)
    for (Tensor<T>* t : tensors_of(cfg, g)) fill_normal(t->data(), t->numel(), rng, 100.0);
  Tensor<T> dx2, dz2;
  s.backward(dx2, dz2, GradMode::overwrite);
  EXPECT_LT(rel_error(dx2, dx), tol);
  EXPECT_LT(rel_error(dz2, dz), tol);
  for (int l = 0; l < s.layers; ++l) {
    std::vector<std::string> names;
    s.grads[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<T>&) { names.push_back(n); });
    auto got = tensors_of(cfg, s.grads[size_t(l)]), exp = tensors_of(cfg, want[size_t(l)]);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(rel_error(*got[i], *exp[i]), tol) << "layer " << l << " " << names[i];
  }
}

TEST(GradMode, OverwriteMatchesAccumulatingIntoZerosF32) {
  check_overwrite_matches_accumulate<float>(false, 1e-6);
  check_overwrite_matches_accumulate<float>(true, 1e-6);
}

TEST(GradMode, OverwriteMatchesAccumulatingIntoZerosF64) {
  check_overwrite_matches_accumulate<double>(false, 1e-13);
  check_overwrite_matches_accumulate<double>(true, 1e-13);
}

// Without a previous layer's logits the gate map gets no gradient: overwriting, it is
// zeroed, not left stale.
TEST(GradMode, OverwriteZeroesTheGateMapWithoutAGatingResidual) {
  const MoeConfig cfg = wide_moe_config(false);
  MoeStack<float> s(cfg, 1, 16);
  s.randomize(7);
  MoeCache<float> cache;
  Tensor<float> y({s.tokens, cfg.hidden}), dx({s.tokens, cfg.hidden});
  moe_forward(cfg, s.params[0], s.x.data(), s.tokens, static_cast<const float*>(nullptr), cache, y.data());
  auto grad = MoeParams<float>::zeros(cfg);
  for (int64_t i = 0; i < grad.gate_map.numel(); ++i) grad.gate_map[i] = 5.0f;
  MoeBackwardScratch<float> scratch;
  moe_backward<float>(cfg, s.params[0], s.x.data(), nullptr, cache, s.dy.data(), nullptr, 0.1, dx.data(), nullptr,
                      grad, scratch, GradMode::overwrite);
  double sum = 0;
  for (int64_t i = 0; i < grad.gate_map.numel(); ++i) sum += std::fabs(grad.gate_map[i]);
  EXPECT_EQ(sum, 0.0);
}

}  // namespace
