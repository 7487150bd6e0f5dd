// A stack of MoE++ layers chained the way a decoder chains them: x_{l+1} = x_l + y_l and
// layer l+1 receives layer l's router logits z as its gating residual input. Layer 0
// receives z_in, so the gradient w.r.t. an incoming gating residual is tested too.
//   loss = sum(dy * x_L) + beta * mean_l L_b(l)
// The PyTorch reference (tools/reference/moe_reference.py) computes the same function.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "moe/moe_layer.h"
#include "test_util.h"

namespace moepp::test {

// Every expert kind, 8 FFN experts. D = 64: whole 32-column panels on 64-byte aligned rows,
// so the experts' weight gradients take the panel kernel's non-temporal stores (a dozen
// tokens per expert).
inline MoeConfig wide_moe_config(bool two_layer) {
  MoeConfig cfg;
  cfg.hidden = 64;
  cfg.intermediate = 32;
  cfg.num_ffn = 8;
  cfg.num_constant = 2;
  cfg.num_copy = 1;
  cfg.num_zero = 1;
  cfg.top_k = 2;
  cfg.gate_weights = GateWeights::official;
  cfg.two_layer_router = two_layer;
  cfg.logits_norm = true;
  cfg.norm_std = 1.0;
  cfg.balance_tau = 0.6;
  return cfg;
}

// A layer's tensors in for_each order.
template <typename T>
std::vector<Tensor<T>*> tensors_of(const MoeConfig& cfg, MoeParams<T>& p) {
  std::vector<Tensor<T>*> out;
  p.for_each(cfg, [&](const std::string&, Tensor<T>& t) { out.push_back(&t); });
  return out;
}

template <typename T>
struct MoeStack {
  MoeConfig cfg;
  int layers = 3;
  int64_t tokens = 0;
  double beta = 0.1;
  std::vector<MoeParams<T>> params, grads;
  std::vector<MoeCache<T>> caches;
  MoeBackwardScratch<T> backward_scratch;  // the layers' backward takes it in turn, as the model's does
  Tensor<T> x, z_in, dy;         // inputs
  std::vector<Tensor<T>> xs;     // x_0 .. x_L
  std::vector<double> balance;   // L_b per layer

  MoeStack(const MoeConfig& c, int n_layers, int64_t n_tokens) : cfg(c), layers(n_layers), tokens(n_tokens) {
    for (int l = 0; l < layers; ++l) {
      params.push_back(MoeParams<T>::zeros(cfg));
      grads.push_back(MoeParams<T>::zeros(cfg));
    }
    caches.resize(size_t(layers));
    x.resize({tokens, cfg.hidden});
    z_in.resize({tokens, int64_t(cfg.num_experts())});
    dy.resize({tokens, cfg.hidden});
  }

  // Random parameters and inputs: router weights large enough for non-degenerate routing,
  // FFN weights at 1/sqrt(fan_in), constant-expert mixers small enough not to saturate.
  void randomize(uint64_t seed) {
    Rng rng(seed);
    auto fill = [&](Tensor<T>& t, double std) { fill_normal(t.data(), t.numel(), rng, std); };
    for (auto& p : params) {
      fill(p.wg, 0.5);
      fill(p.w1, 0.5);
      fill(p.w2, 0.5);
      fill(p.gate_map, 0.3);
      for (auto& t : p.up) fill(t, 1.0 / std::sqrt(double(cfg.hidden)));
      for (auto& t : p.down) fill(t, 1.0 / std::sqrt(double(cfg.intermediate)));
      for (auto& t : p.constant) fill(t, 1.0);
      for (auto& t : p.constant_wg) fill(t, 0.2);
    }
    fill_normal(x.data(), x.numel(), rng);
    fill_normal(z_in.data(), z_in.numel(), rng);
    fill_normal(dy.data(), dy.numel(), rng);
  }

  double forward() {
    xs.clear();
    xs.resize(size_t(layers) + 1);
    xs[0] = x.clone();
    balance.assign(size_t(layers), 0.0);
    Tensor<T> y({tokens, cfg.hidden});
    double bsum = 0;
    for (int l = 0; l < layers; ++l) {
      const T* z_prev = l == 0 ? z_in.data() : caches[size_t(l) - 1].router.z.data();
      moe_forward(cfg, params[size_t(l)], xs[size_t(l)].data(), tokens, z_prev, caches[size_t(l)], y.data());
      xs[size_t(l) + 1] = xs[size_t(l)].clone();
      for (int64_t i = 0; i < y.numel(); ++i) xs[size_t(l) + 1][i] += y[i];
      balance[size_t(l)] = caches[size_t(l)].balance_loss;
      bsum += balance[size_t(l)];
    }
    double loss = 0;
    for (int64_t i = 0; i < dy.numel(); ++i) loss += double(dy[i]) * double(xs[size_t(layers)][i]);
    return loss + beta * bsum / layers;
  }

  // Every layer's selected experts, in order: the branch the loss is smooth on.
  std::vector<int32_t> routing() const {
    std::vector<int32_t> r;
    for (const auto& c : caches) r.insert(r.end(), c.router.idx.begin(), c.router.idx.end());
    return r;
  }

  // Checks grad (n values) against central finite differences of the stack's loss in
  // param, holding every layer's routing at what it is now (double stacks only).
  void expect_fd(const std::string& what, double* param, const double* grad, int64_t n) {
    const auto base = routing();
    expect_fd_gradient(what, param, grad, n, [&] { return forward(); }, 1e-6, 1e-3,
                       [&] { return routing() == base; });
  }

  // Randomizes with the first seed from `first` on (below 200) whose forward satisfies
  // `wanted` (a routing the test needs); false when none does.
  bool randomize_until(uint64_t first, const std::function<bool()>& wanted) {
    for (uint64_t seed = first; seed < 200; ++seed) {
      randomize(seed);
      forward();
      if (wanted()) return true;
    }
    return false;
  }

  // After forward(): the backward's gradients of x, z_in and every parameter of every layer
  // against finite differences (double stacks only).
  void expect_every_gradient_matches_fd() {
    Tensor<T> dx, dz_in;
    backward(dx, dz_in);
    expect_fd("x", x.data(), dx.data(), dx.numel());
    expect_fd("z_in", z_in.data(), dz_in.data(), dz_in.numel());
    for (int l = 0; l < layers; ++l) {
      const auto p = tensors_of(cfg, params[size_t(l)]), g = tensors_of(cfg, grads[size_t(l)]);
      std::vector<std::string> names;
      params[size_t(l)].for_each(cfg, [&](const std::string& n, Tensor<T>&) { names.push_back(n); });
      for (size_t i = 0; i < p.size(); ++i)
        expect_fd("layer " + std::to_string(l) + " " + names[i], p[i]->data(), g[i]->data(), p[i]->numel());
    }
  }

  // After forward(): fills grads, dx and dz_in. Accumulating, grads are zeroed first;
  // overwriting, the layers write them over whatever they hold.
  void backward(Tensor<T>& dx, Tensor<T>& dz_in, GradMode mode = GradMode::accumulate) {
    if (mode == GradMode::accumulate)
      for (auto& g : grads) g.zero();
    Tensor<T> d_x = dy.clone();  // gradient w.r.t. x_L
    Tensor<T> dz_next;           // gradient w.r.t. layer l's z, from layer l+1
    for (int l = layers - 1; l >= 0; --l) {
      const T* z_prev = l == 0 ? z_in.data() : caches[size_t(l) - 1].router.z.data();
      Tensor<T> d_in = d_x.clone();  // the residual path
      Tensor<T> dz_prev({tokens, int64_t(cfg.num_experts())});
      moe_backward(cfg, params[size_t(l)], xs[size_t(l)].data(), z_prev, caches[size_t(l)], d_x.data(),
                   dz_next.numel() ? dz_next.data() : nullptr, beta / layers, d_in.data(),
                   dz_prev.data(), grads[size_t(l)], backward_scratch, mode);
      d_x = std::move(d_in);
      dz_next = std::move(dz_prev);
    }
    dx = std::move(d_x);
    dz_in = std::move(dz_next);
  }
};

}  // namespace moepp::test
