// Whole-model gradient check: a tiny decoder with dense and MoE++ layers (the gating
// residual crossing a dense layer), every parameter against five-point finite differences
// in double with the routing branch held fixed, then the f32 path against f64.
#include "model/transformer.h"

#include <gtest/gtest.h>

#include "kernels/mixed_precision.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

ModelConfig tiny_config(bool two_layer, bool tie) {
  ModelConfig c;
  c.vocab_size = 20;
  c.hidden_size = 8;
  c.intermediate_size = 6;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 16;
  c.moe_expert_interval = 2;  // layers 1 and 3 are MoE, 0 and 2 dense
  c.moe.num_ffn = 4;  // + the released 2 constant, 1 copy, 1 zero experts: E = 8
  c.moe.two_layer_router = two_layer;
  c.moe.logits_norm = !two_layer;
  c.moe.scale_inputs = two_layer;
  c.tie_word_embeddings = tie;
  c.balance_coef = 0.1;
  c.validate();
  return c;
}

template <typename T>
void randomize(const ModelConfig& cfg, ModelParams<T>& p, uint64_t seed) {
  Rng rng(seed);
  p.for_each(cfg, [&](const std::string& name, Tensor<T>& t) {
    const bool norm = name.find("norm") != std::string::npos;
    const double std = name.find("gate.") != std::string::npos ? 0.5
                       : name.find(".wg.weight") != std::string::npos ? 0.2
                       : name.find("constant") != std::string::npos ? 1.0
                       : name.find("embed") != std::string::npos ? 0.5 : 0.3;
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = T(norm ? 1.0 + 0.1 * rng.normal() : std * rng.normal());
  });
}

void run_case(bool two_layer, bool tie) {
  const ModelConfig cfg = tiny_config(two_layer, tie);
  auto w = ModelParams<double>::zeros(cfg);
  const int64_t B = 2, S = 5;
  std::vector<int32_t> ids = {3, 17, 0, 5, 5, 11, 2, 19, 8, 1};
  std::vector<int32_t> targets = {17, 0, 5, 5, -1, 2, 19, 8, 1, -1};
  ModelCache<double> cache;
  auto routing = [&] {
    std::vector<int32_t> r;
    for (const auto& lc : cache.layers) r.insert(r.end(), lc.moe.router.idx.begin(), lc.moe.router.idx.end());
    return r;
  };
  auto all_experts_used = [&] {
    for (size_t l = 0; l < cache.layers.size(); ++l)
      if (cfg.is_moe_layer(int(l)))
        for (int e = 0; e < cfg.num_experts(); ++e)
          if (cache.layers[l].moe.plan.rows(e) == 0) return false;
    return true;
  };
  uint64_t seed = 1;
  for (; seed < 300; ++seed) {
    randomize(cfg, w, seed);
    model_forward(cfg, w, ids.data(), B, S, cache);
    if (all_experts_used()) break;
  }
  ASSERT_TRUE(all_experts_used());
  auto grad = ModelParams<double>::zeros(cfg);
  const LossParts parts = model_backward(cfg, w, cache, targets.data(), grad);
  EXPECT_GT(parts.balance_loss, 0.0);
  const auto base = routing();
  auto loss = [&] {
    model_forward(cfg, w, ids.data(), B, S, cache);
    return model_loss(cfg, cache, targets.data()).loss;
  };
  EXPECT_NEAR(loss(), parts.loss, 1e-12);
  std::vector<Tensor<double>*> gs;
  grad.for_each(cfg, [&](const std::string&, Tensor<double>& t) { gs.push_back(&t); });
  size_t i = 0;
  w.for_each(cfg, [&](const std::string& name, Tensor<double>& t) {
    Tensor<double>* g = gs[i++];
    // The first MoE layer has no gating residual input: its gate map gets no gradient.
    if (name == "model.layers.1.mlp.moe.gate.gate_map.weight") {
      for (int64_t j = 0; j < g->numel(); ++j) EXPECT_EQ((*g)[j], 0.0);
      return;
    }
    expect_fd_gradient(name, t.data(), g->data(), t.numel(), loss, 1e-6, 1e-3, [&] { return routing() == base; });
  });

  // f32 against f64 on the same numbers.
  auto wf = ModelParams<float>::zeros(cfg);
  std::vector<Tensor<double>*> src;
  w.for_each(cfg, [&](const std::string&, Tensor<double>& t) { src.push_back(&t); });
  i = 0;
  wf.for_each(cfg, [&](const std::string&, Tensor<float>& t) { t = cast<float>(*src[i++]); });
  ModelCache<float> cf;
  model_forward(cfg, wf, ids.data(), B, S, cf);
  auto gf = ModelParams<float>::zeros(cfg);
  const LossParts pf = model_backward(cfg, wf, cf, targets.data(), gf);
  model_forward(cfg, w, ids.data(), B, S, cache);
  EXPECT_NEAR(pf.loss, parts.loss, 1e-5 * parts.loss);
  EXPECT_LT(rel_error(cf.logits, cache.logits), 1e-5);
  i = 0;
  gf.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
    const Tensor<double>& g = *gs[i++];
    if (name == "model.layers.1.mlp.moe.gate.gate_map.weight") return;
    EXPECT_LT(rel_error(t, g), 1e-4) << name;
  });
}

// GradMode::overwrite (the trainer's first micro-batch) writes every gradient over stale
// values: the same as accumulating into zeroed buffers, dense layers, norms, embeddings
// and the MoE layers alike.
void overwrite_case(bool two_layer, bool tie) {
  const ModelConfig cfg = tiny_config(two_layer, tie);
  auto w = ModelParams<float>::zeros(cfg);
  randomize(cfg, w, 5);
  std::vector<int32_t> ids = {3, 17, 0, 5, 5, 11, 2, 19, 8, 1};
  std::vector<int32_t> targets = {17, 0, 5, 5, -1, 2, 19, 8, 1, -1};
  ModelCache<float> cache;
  model_forward(cfg, w, ids.data(), 2, 5, cache);
  auto want = ModelParams<float>::zeros(cfg);
  const LossParts a = model_backward(cfg, w, cache, targets.data(), want);
  auto got = ModelParams<float>::zeros(cfg);
  Rng rng(9);
  got.for_each(cfg, [&](const std::string&, Tensor<float>& t) { fill_normal(t.data(), t.numel(), rng, 50.0); });
  const LossParts b = model_backward(cfg, w, cache, targets.data(), got, GradMode::overwrite);
  EXPECT_EQ(a.loss, b.loss);
  std::vector<const Tensor<float>*> ws;
  want.for_each(cfg, [&](const std::string&, Tensor<float>& t) { ws.push_back(&t); });
  size_t i = 0;
  got.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
    EXPECT_LT(rel_error(t, *ws[i++]), 1e-6) << name;
  });
}

// A ModelCache keeps its buffers from step to step (the layers' inputs, the backward's
// scratch): a batch run through a cache that held other batches, smaller and larger, gives
// the logits and gradients of a fresh cache, bit for bit.
void reused_cache_case(bool two_layer, bool tie, GemmPrecision precision) {
  const GemmPrecisionScope scope(precision);
  const ModelConfig cfg = tiny_config(two_layer, tie);
  auto w = ModelParams<float>::zeros(cfg);
  randomize(cfg, w, 7);
  Rng rng(13);
  auto batch = [&](int64_t n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    return v;
  };
  auto step = [&](ModelCache<float>& cache, const std::vector<int32_t>& ids, const std::vector<int32_t>& targets,
                  int64_t B, int64_t S) {
    model_forward(cfg, w, ids.data(), B, S, cache);
    auto g = ModelParams<float>::zeros(cfg);
    model_backward(cfg, w, cache, targets.data(), g, GradMode::overwrite);
    return g;
  };
  ModelCache<float> reused;
  for (auto [B, S] : {std::pair<int64_t, int64_t>{3, 6}, {1, 4}, {2, 5}, {4, 7}}) {
    const auto ids = batch(B * S), targets = batch(B * S);
    auto got = step(reused, ids, targets, B, S);
    ModelCache<float> fresh;
    auto want = step(fresh, ids, targets, B, S);
    EXPECT_EQ(rel_error(reused.logits, fresh.logits), 0.0) << B << "x" << S;
    std::vector<const Tensor<float>*> ws;
    want.for_each(cfg, [&](const std::string&, Tensor<float>& t) { ws.push_back(&t); });
    size_t i = 0;
    got.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
      EXPECT_EQ(rel_error(t, *ws[i++]), 0.0) << name << " at " << B << "x" << S;
    });
  }
}

}  // namespace

TEST(TransformerGrad, OverwriteMatchesAccumulatingIntoZeros) {
  overwrite_case(false, false);
  overwrite_case(true, true);
}

TEST(TransformerGrad, ReusedCacheEqualsFreshOne) {
  reused_cache_case(false, false, GemmPrecision::f32);
  reused_cache_case(true, true, GemmPrecision::f32);
  // bf16 products round operands once for several products (Bf16OperandScope) in scratch
  // the cache keeps.
  if (!gemm_bf16_available()) GTEST_SKIP() << "no native bf16 products on this CPU or build";
  reused_cache_case(false, false, GemmPrecision::bf16);
  reused_cache_case(true, true, GemmPrecision::bf16);
}

TEST(TransformerGrad, LinearRouterLogitNormUntied) { run_case(false, false); }
TEST(TransformerGrad, TwoLayerRouterScaledInputsTied) { run_case(true, true); }
