#include "model/decoder_layer.h"

#include <chrono>

#include "core/parallel.h"
#include "kernels/rmsnorm.h"

namespace moepp {

template <typename T>
void decoder_layer_forward(const ModelConfig& cfg, const LayerWeights<T>& w, int layer, const RowBatch<T>& rows,
                           const T* x, const T* z_prev, LayerCache<T>& c, T* x_out) {
  const int64_t n = rows.rows, D = cfg.hidden_size;
  c.h.fit({n, D});
  attention_block_forward(cfg, w, layer, rows, x, c.attn, c.h.data());
  c.b.fit({n, D});
  c.rstd2.fit({n});
  rmsnorm_forward(c.h.data(), w.post_norm, c.b.data(), c.rstd2.data(), n, D, T(cfg.rms_norm_eps));
  // The MoE layer or MLP writes x_out (x is no longer read), then the residual is added.
  if (w.is_moe) {
    const auto start = std::chrono::steady_clock::now();
    moe_forward(cfg.layer_moe(), w.moe, c.b.data(), n, z_prev, c.moe, x_out);
    c.moe_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } else {
    dense_mlp_forward(cfg, w, c.b.data(), n, c.mlp, x_out);
  }
  const T* h = c.h.data();
  parallel_for(n * D, [&](int64_t i) { x_out[i] += h[i]; }, 1 << 16);
}

template <typename T>
void decoder_layer_backward(const ModelConfig& cfg, const LayerParams<T>& w, const RowBatch<T>& rows, const T* z_prev,
                            LayerCache<T>& c, const T* dz, double dbalance, T* dx, T* dz_prev,
                            LayerParams<T>& g, GradMode mode, LayerBackwardScratch<T>& scratch) {
  const int64_t n = rows.rows, D = cfg.hidden_size;
  // db is added to by both branches.
  Tensor<T>& db = scratch.db;
  db.fit({n, D});
  parallel_zero({{db.data(), size_t(n * D) * sizeof(T)}});
  if (w.is_moe) {
    moe_backward(cfg.layer_moe(), w.moe, c.b.data(), z_prev, c.moe, dx, dz, dbalance, db.data(), dz_prev, g.moe,
                 scratch.moe, mode);
  } else {
    dense_mlp_backward(cfg, w, c.b.data(), n, c.mlp, dx, db.data(), g);
  }
  // x_out = h + mlp(rms2(h)): dx becomes dL/dh (the residual's share is dx itself), then,
  // through the attention block, dL/dx.
  rmsnorm_backward(c.h.data(), w.post_norm.data(), c.rstd2.data(), db.data(), dx, g.post_norm.data(), n, D);
  attention_block_backward(cfg, w, c.x.data(), rows.batch, rows.seq, c.attn, dx, g, scratch.attn);
}

template void decoder_layer_forward<float>(const ModelConfig&, const LayerWeights<float>&, int, const RowBatch<float>&, const float*, const float*, LayerCache<float>&, float*);
template void decoder_layer_forward<double>(const ModelConfig&, const LayerWeights<double>&, int, const RowBatch<double>&, const double*, const double*, LayerCache<double>&, double*);
template void decoder_layer_backward<float>(const ModelConfig&, const LayerParams<float>&, const RowBatch<float>&, const float*, LayerCache<float>&, const float*, double, float*, float*, LayerParams<float>&, GradMode, LayerBackwardScratch<float>&);
template void decoder_layer_backward<double>(const ModelConfig&, const LayerParams<double>&, const RowBatch<double>&, const double*, LayerCache<double>&, const double*, double, double*, double*, LayerParams<double>&, GradMode, LayerBackwardScratch<double>&);

}  // namespace moepp
