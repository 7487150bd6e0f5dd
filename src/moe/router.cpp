#include "moe/router.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/mixed_precision.h"
#include "kernels/softmax.h"

namespace moepp {

namespace {
template <typename S>
void top_k_impl(const S* scores, int n, int k, int32_t* out) {
  // Insertion into a sorted list of k; strict '>' keeps the lower index on ties.
  int filled = 0;
  for (int e = 0; e < n; ++e) {
    int pos = filled;
    while (pos > 0 && scores[e] > scores[out[pos - 1]]) --pos;
    if (pos >= k) continue;
    for (int m = std::min(filled, k - 1); m > pos; --m) out[m] = out[m - 1];
    out[pos] = e;
    if (filled < k) ++filled;
  }
}
}  // namespace

void top_k_row(const float* scores, int n, int k, int32_t* out) { top_k_impl(scores, n, k, out); }
void top_k_row(const double* scores, int n, int k, int32_t* out) { top_k_impl(scores, n, k, out); }

template <typename T>
void RouterCache<T>::resize(const MoeConfig& cfg, int64_t n) {
  const int64_t E = cfg.num_experts(), k = cfg.top_k;
  if (tokens == n && z.numel() == n * E && g.numel() == n * k) return;
  tokens = n;
  if (cfg.two_layer_router) hidden.resize({n, cfg.router_hidden()});
  z.resize({n, E});
  s.resize({n, E});
  sigma.resize({n});
  p.resize({n, E});
  idx.assign(size_t(n * k), 0);
  g.resize({n, k});
  selected_sum.resize({n});
}

template <typename T>
void router_forward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, int64_t n,
                    const T* z_prev, RouterCache<T>& c) {
  const int64_t E = cfg.num_experts(), D = cfg.hidden, k = cfg.top_k;
  // Routing stays f32 in mixed precision: a rounded logit can flip a top-k choice, and these
  // products are a sliver of the layer's work.
  const GemmPrecisionScope f32_routing(GemmPrecision::f32);
  c.resize(cfg, n);
  // 1. logits
  if (cfg.two_layer_router) {
    const int64_t H = cfg.router_hidden();
    gemm<T>(Trans::N, Trans::T, n, H, D, T(1), x, D, w.w1.data(), D, T(0), c.hidden.data(), H);
    for (int64_t i = 0; i < n * H; ++i) c.hidden[i] = std::tanh(c.hidden[i]);
    gemm<T>(Trans::N, Trans::T, n, E, H, T(1), c.hidden.data(), H, w.w2.data(), H, T(0), c.z.data(), E);
  } else {
    gemm<T>(Trans::N, Trans::T, n, E, D, T(1), x, D, w.wg.data(), D, T(0), c.z.data(), E);
  }
  // 2. gating residual: z_t += Gm z_prev_t
  if (z_prev)
    gemm<T>(Trans::N, Trans::T, n, E, E, T(1), z_prev, E, w.gate_map.data(), E, T(1), c.z.data(), E);
  for (int64_t i = 0; i < n * E; ++i)
    MOEPP_CHECK(std::isfinite(double(c.z[i])), "router: non-finite logit ", double(c.z[i]),
                " at token ", i / E, ", expert ", i % E, " (NaN or inf in the layer input?)");
  // 3. logit normalisation (unbiased std over the E experts)
  parallel_for(n, [&](int64_t t) {
    const T* zt = c.z.data() + t * E;
    T* st = c.s.data() + t * E;
    if (!cfg.logits_norm) {
      for (int64_t e = 0; e < E; ++e) st[e] = zt[e];
      return;
    }
    T mean = 0;
    for (int64_t e = 0; e < E; ++e) mean += zt[e];
    mean /= T(E);
    T var = 0;
    for (int64_t e = 0; e < E; ++e) var += (zt[e] - mean) * (zt[e] - mean);
    const T sigma = std::sqrt(var / T(E - 1));
    c.sigma[t] = sigma;
    const T factor = T(cfg.norm_std) / sigma;
    for (int64_t e = 0; e < E; ++e) st[e] = zt[e] * factor;
  }, 64);
  // 4. probabilities, top-k and gate weights
  softmax_forward(c.s.data(), c.p.data(), n, E);
  parallel_for(n, [&](int64_t t) {
    const T* st = c.s.data() + t * E;
    const T* pt = c.p.data() + t * E;
    int32_t* it = c.idx.data() + t * k;
    T* gt = c.g.data() + t * k;
    top_k_row(st, int(E), int(k), it);  // same order as p: softmax is monotonic
    switch (cfg.gate_weights) {
      case GateWeights::softmax:
        for (int64_t j = 0; j < k; ++j) gt[j] = pt[it[j]];
        break;
      case GateWeights::official: {
        T sum = 0;
        for (int64_t j = 0; j < k; ++j) {
          gt[j] = cfg.kind(it[j]) == ExpertKind::zero ? T(0) : pt[it[j]];
          sum += gt[j];
        }
        c.selected_sum[t] = sum;
        for (int64_t j = 0; j < k; ++j) gt[j] = sum > T(0) ? gt[j] / sum : T(0);
        break;
      }
      case GateWeights::mixtral: {
        T mx = st[it[0]], sum = 0;
        for (int64_t j = 0; j < k; ++j) sum += (gt[j] = std::exp(st[it[j]] - mx));
        for (int64_t j = 0; j < k; ++j) gt[j] /= sum;
        break;
      }
    }
  }, 64);
}

template <typename T>
void router_backward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, const T* z_prev,
                     const RouterCache<T>& c, const T* dg, const T* dp_extra, const T* dz_next,
                     T* dx, T* dz_prev, MoeParams<T>& grad) {
  const int64_t n = c.tokens, E = cfg.num_experts(), D = cfg.hidden, k = cfg.top_k;
  const GemmPrecisionScope f32_routing(GemmPrecision::f32);  // as in router_forward
  Tensor<T> dp({n, E}), ds({n, E}), dz({n, E});
  // 4. gate weights -> dp (official, softmax) or ds (mixtral)
  parallel_for(n, [&](int64_t t) {
    const int32_t* it = c.idx.data() + t * k;
    const T* gt = c.g.data() + t * k;
    const T* dgt = dg + t * k;
    T* dpt = dp.data() + t * E;
    T* dst = ds.data() + t * E;
    switch (cfg.gate_weights) {
      case GateWeights::softmax:
        for (int64_t j = 0; j < k; ++j) dpt[it[j]] += dgt[j];
        break;
      case GateWeights::official: {
        const T sum = c.selected_sum[t];
        if (sum <= T(0)) break;  // every selected expert was a zero expert: g = 0, no gradient
        T dot = 0;
        for (int64_t j = 0; j < k; ++j) dot += dgt[j] * gt[j];
        for (int64_t j = 0; j < k; ++j)
          if (cfg.kind(it[j]) != ExpertKind::zero) dpt[it[j]] += (dgt[j] - dot) / sum;
        break;
      }
      case GateWeights::mixtral: {
        T dot = 0;
        for (int64_t j = 0; j < k; ++j) dot += dgt[j] * gt[j];
        for (int64_t j = 0; j < k; ++j) dst[it[j]] += gt[j] * (dgt[j] - dot);
        break;
      }
    }
    if (dp_extra)
      for (int64_t e = 0; e < E; ++e) dpt[e] += dp_extra[t * E + e];
  }, 64);
  softmax_backward(c.p.data(), dp.data(), ds.data(), n, E);
  // 3. logit normalisation: s_i = c z_i / sigma
  parallel_for(n, [&](int64_t t) {
    const T* zt = c.z.data() + t * E;
    const T* dst = ds.data() + t * E;
    T* dzt = dz.data() + t * E;
    if (!cfg.logits_norm) {
      for (int64_t e = 0; e < E; ++e) dzt[e] = dst[e];
    } else {
      const T sigma = c.sigma[t], factor = T(cfg.norm_std) / sigma;
      T mean = 0, dot = 0;
      for (int64_t e = 0; e < E; ++e) {
        mean += zt[e];
        dot += dst[e] * zt[e];
      }
      mean /= T(E);
      const T coef = factor * dot / (sigma * sigma * T(E - 1));
      for (int64_t e = 0; e < E; ++e) dzt[e] = factor * dst[e] - coef * (zt[e] - mean);
    }
    if (dz_next)
      for (int64_t e = 0; e < E; ++e) dzt[e] += dz_next[t * E + e];
  }, 64);
  // 2. gating residual
  if (z_prev) {
    gemm<T>(Trans::T, Trans::N, E, E, n, T(1), dz.data(), E, z_prev, E, T(1), grad.gate_map.data(), E);
    if (dz_prev)
      gemm<T>(Trans::N, Trans::N, n, E, E, T(1), dz.data(), E, w.gate_map.data(), E, T(1), dz_prev, E);
  }
  // 1. logits
  if (cfg.two_layer_router) {
    const int64_t H = cfg.router_hidden();
    Tensor<T> da({n, H});
    gemm<T>(Trans::T, Trans::N, E, H, n, T(1), dz.data(), E, c.hidden.data(), H, T(1), grad.w2.data(), H);
    gemm<T>(Trans::N, Trans::N, n, H, E, T(1), dz.data(), E, w.w2.data(), H, T(0), da.data(), H);
    for (int64_t i = 0; i < n * H; ++i) da[i] *= T(1) - c.hidden[i] * c.hidden[i];
    gemm<T>(Trans::T, Trans::N, H, D, n, T(1), da.data(), H, x, D, T(1), grad.w1.data(), D);
    gemm<T>(Trans::N, Trans::N, n, D, H, T(1), da.data(), H, w.w1.data(), D, T(1), dx, D);
  } else {
    gemm<T>(Trans::T, Trans::N, E, D, n, T(1), dz.data(), E, x, D, T(1), grad.wg.data(), D);
    gemm<T>(Trans::N, Trans::N, n, D, E, T(1), dz.data(), E, w.wg.data(), D, T(1), dx, D);
  }
}

template struct RouterCache<float>;
template struct RouterCache<double>;
template void router_forward<float>(const MoeConfig&, const MoeParams<float>&, const float*, int64_t, const float*, RouterCache<float>&);
template void router_forward<double>(const MoeConfig&, const MoeParams<double>&, const double*, int64_t, const double*, RouterCache<double>&);
template void router_backward<float>(const MoeConfig&, const MoeParams<float>&, const float*, const float*, const RouterCache<float>&, const float*, const float*, const float*, float*, float*, MoeParams<float>&);
template void router_backward<double>(const MoeConfig&, const MoeParams<double>&, const double*, const double*, const RouterCache<double>&, const double*, const double*, const double*, double*, double*, MoeParams<double>&);

}  // namespace moepp
