#include "moe/moe_layer.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/dot.h"
#include "moe/balance_loss.h"
#include "moe/experts/constant.h"
#include "moe/experts/copy.h"

namespace moepp {

template <typename T>
void moe_forward(const MoeConfig& cfg, const MoeWeights<T>& weights, const T* x, int64_t n,
                 const T* z_prev, MoeCache<T>& c, T* y) {
  cfg.validate();
  if (c.comm && c.comm->ep_size() > 1) {  // this rank holds its own experts only
    check_expert_parallel(cfg, c.comm->ep_size());
    const ExpertShard mine = ExpertShard::of(cfg, c.comm->ep_size(), c.comm->ep_rank());
    weights.check_shapes(cfg, mine.first, mine.count);
  } else {
    weights.check_shapes(cfg);
  }
  const MoeParams<T>& w = *weights.params;
  MOEPP_CHECK(n >= 0, "moe layer: negative token count ", n);
  const int64_t D = cfg.hidden, k = cfg.top_k;
  const T scale = T(cfg.input_scale());
  c.tokens = n;
  const T* xs = x;  // what the experts receive
  if (scale != T(1)) {
    c.x_in.fit({n, D});
    parallel_for(n * D, [&](int64_t i) { c.x_in[i] = scale * x[i]; }, 1 << 16);
    xs = c.x_in.data();
  }

  router_forward(cfg, w, x, n, z_prev, c.router);
  plan_dispatch(cfg, c.router.idx.data(), n, c.plan, c.capacity_factor, c.comm);
  c.stats = routing_stats(cfg, c.plan);
  std::vector<double> sums;
  balance_loss_sums(cfg, c.router.p.data(), c.router.idx.data(), n, sums);
  if (c.comm) c.comm->sum_all(sums.data(), int64_t(sums.size()));
  c.balance_loss = balance_loss_from_sums(cfg, sums, c.f);
  c.balance_tokens = int64_t(sums.back());

  // FFN slots: one contiguous block, grouped GEMMs (on the experts' owners, expert parallel).
  c.ffn.x.fit({c.plan.ffn_rows(), D});
  gather_ffn_rows(c.plan, xs, D, c.ffn.x.data());
  if (c.comm && c.comm->ep_size() > 1) ffn_experts_forward_parallel(cfg, weights, c.plan, c.ffn, *c.comm, c.ep);
  else ffn_experts_forward(cfg, weights, c.plan, c.ffn);

  // Combine, with the copy and constant experts applied in the same pass; zero slots and
  // slots over capacity skip.
  c.constant_a.fit({n * k, 2});
  parallel_for(n, [&](int64_t t) {
    T* yt = y + t * D;
    const T* xt = xs + t * D;
    std::memset(yt, 0, size_t(D) * sizeof(T));
    for (int64_t j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (c.plan.dropped(slot)) continue;
      const int e = c.router.idx[size_t(slot)];
      const T gate = c.router.g[slot];
      switch (cfg.kind(e)) {
        case ExpertKind::ffn: {
          const T* o = c.ffn.o.data() + int64_t(c.plan.slot_pos[size_t(slot)]) * D;
          for (int64_t d = 0; d < D; ++d) yt[d] += gate * o[d];
          break;
        }
        case ExpertKind::constant: {
          const size_t ci = size_t(e - cfg.num_ffn);
          T* a = c.constant_a.data() + slot * 2;
          constant_forward(xt, w.constant[ci].data(), w.constant_wg[ci].data(), D, a, (T*)nullptr);
          const T* v = w.constant[ci].data();
          for (int64_t d = 0; d < D; ++d) yt[d] += gate * (a[0] * xt[d] + a[1] * v[d]);
          break;
        }
        case ExpertKind::copy:
          copy_expert_forward(xt, D, gate, yt);
          break;
        case ExpertKind::zero:
          break;
      }
    }
  }, 16);
}

template <typename T>
void moe_backward(const MoeConfig& cfg, const MoeParams<T>& w, const T* x, const T* z_prev,
                  MoeCache<T>& c, const T* dy, const T* dz_next, double dbalance, T* dx,
                  T* dz_prev, MoeParams<T>& grad, MoeBackwardScratch<T>& scratch, GradMode mode) {
  const int64_t n = c.tokens, D = cfg.hidden, I = cfg.intermediate, k = cfg.top_k;
  // Overwriting, the FFN experts' gradients are written by their GEMMs (below); the rest
  // of the layer's are a few vectors and small matrices: zeroed, then accumulated into.
  if (mode == GradMode::overwrite) grad.zero_outside_ffn_experts();
  const int64_t E = cfg.num_experts(), R = c.plan.ffn_rows();
  const T scale = T(cfg.input_scale());
  const T* xs = scale != T(1) ? c.x_in.data() : x;  // what the experts received
  scratch.dg.fit({n, k});
  scratch.d_o.fit({R, D});
  scratch.dx_in.fit({n, D});
  // Gate gradients, the weighted output gradient of every FFN row, and the copy and
  // constant experts, token by token: each token's dy, x and dx rows are read once. A
  // constant expert's vector and mixer gradients are sums over its slots; each thread sums
  // its tokens' apart, and the partial sums are added in thread order (deterministic for
  // a given thread count).
  const int64_t C = cfg.num_constant;
  const int threads = omp_in_parallel() || n < 16 ? 1 : int(std::min<int64_t>(max_threads(), 8));
  std::vector<T> partial(size_t(threads) * size_t(C * 3 * D), T(0));  // per thread, per constant: dv [D], dwc [2D]
#pragma omp parallel num_threads(threads)
  {
    T* const mine = partial.data() + size_t(omp_get_thread_num()) * size_t(C * 3 * D);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      const T* dyt = dy + t * D;
      const T* xt = xs + t * D;
      T* dxt = scratch.dx_in.data() + t * D;
      std::memset(dxt, 0, size_t(D) * sizeof(T));
      for (int64_t j = 0; j < k; ++j) {
        const int64_t slot = t * k + j;
        const int e = c.router.idx[size_t(slot)];
        const T gate = c.router.g[slot];
        T& dg = scratch.dg[slot];
        if (c.plan.dropped(slot)) {  // its output is 0 whatever its gate
          dg = 0;
          continue;
        }
        switch (cfg.kind(e)) {
          case ExpertKind::ffn: {
            const int64_t pos = c.plan.slot_pos[size_t(slot)];
            dg = dot<T>(dyt, c.ffn.o.data() + pos * D, D);
            T* dor = scratch.d_o.data() + pos * D;
            for (int64_t d = 0; d < D; ++d) dor[d] = gate * dyt[d];
            break;
          }
          case ExpertKind::constant: {
            const int64_t ci = e - cfg.num_ffn;
            const T* a = c.constant_a.data() + slot * 2;
            const T* v = w.constant[size_t(ci)].data();
            double dy_x = 0, dy_v = 0;  // in double: constant_backward takes their difference
            two_dots(dyt, xt, v, D, dy_x, dy_v);
            dg = T(double(a[0]) * dy_x + double(a[1]) * dy_v);
            T* dv = mine + ci * 3 * D;
            constant_backward(xt, w.constant_wg[size_t(ci)].data(), a, dyt, gate, dy_x, dy_v, D, dxt, dv, dv + D);
            break;
          }
          case ExpertKind::copy:
            dg = dot<T>(dyt, xt, D);
            copy_expert_backward(dyt, D, gate, dxt);
            break;
          case ExpertKind::zero:
            dg = 0;
            break;
        }
      }
    }
  }
  for (int64_t ci = 0; ci < C; ++ci) {
    T* gv = grad.constant[size_t(ci)].data();
    T* gwc = grad.constant_wg[size_t(ci)].data();
    for (int th = 0; th < threads; ++th) {
      const T* dv = partial.data() + size_t(th) * size_t(C * 3 * D) + size_t(ci * 3 * D);
      for (int64_t d = 0; d < D; ++d) gv[d] += dv[d];
      for (int64_t d = 0; d < 2 * D; ++d) gwc[d] += dv[D + d];
    }
  }

  // FFN experts: grouped GEMM backward, then each token gathers its rows' input gradients.
  scratch.d_xg.fit({R, D});
  if (c.comm && c.comm->ep_size() > 1) {
    ffn_experts_backward_parallel(cfg, w, c.plan, scratch.d_o.data(), scratch.d_xg.data(), grad, mode, *c.comm,
                                  c.ep, scratch.owner_d_o, scratch.d_h, scratch.d_u, scratch.owner_d_xg);
  } else {
    scratch.d_h.fit({R, I});
    scratch.d_u.fit({R, 2 * I});
    ffn_experts_backward(cfg, w, c.plan, c.ffn, scratch.d_o.data(), scratch.d_h.data(), scratch.d_u.data(),
                         scratch.d_xg.data(), grad, mode);
  }
  parallel_for(n, [&](int64_t t) {
    T* dxt = scratch.dx_in.data() + t * D;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t slot = t * k + j;
      if (cfg.kind(c.router.idx[size_t(slot)]) != ExpertKind::ffn || c.plan.dropped(slot)) continue;
      const T* src = scratch.d_xg.data() + int64_t(c.plan.slot_pos[size_t(slot)]) * D;
      for (int64_t d = 0; d < D; ++d) dxt[d] += src[d];
    }
  }, 16);
  parallel_for(n * D, [&](int64_t i) { dx[i] += scale * scratch.dx_in[i]; }, 1 << 16);

  // Router, with the balance loss's gradient w.r.t. p.
  const T* dp = nullptr;
  if (dbalance != 0.0) {
    scratch.dp.fit({n, E});
    scratch.dp.zero();
    balance_loss_backward(cfg, c.f, n, c.balance_tokens, dbalance, scratch.dp.data());
    dp = scratch.dp.data();
  }
  router_backward(cfg, w, x, z_prev, c.router, scratch.dg.data(), dp, dz_next, dx, dz_prev, grad);
}

template struct MoeCache<float>;
template struct MoeCache<double>;
template void moe_forward<float>(const MoeConfig&, const MoeWeights<float>&, const float*, int64_t, const float*, MoeCache<float>&, float*);
template void moe_forward<double>(const MoeConfig&, const MoeWeights<double>&, const double*, int64_t, const double*, MoeCache<double>&, double*);
template void moe_backward<float>(const MoeConfig&, const MoeParams<float>&, const float*, const float*, MoeCache<float>&, const float*, const float*, double, float*, float*, MoeParams<float>&, MoeBackwardScratch<float>&, GradMode);
template void moe_backward<double>(const MoeConfig&, const MoeParams<double>&, const double*, const double*, MoeCache<double>&, const double*, const double*, double, double*, double*, MoeParams<double>&, MoeBackwardScratch<double>&, GradMode);

}  // namespace moepp
