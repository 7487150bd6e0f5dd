#include "model/attention_block.h"

#include <algorithm>
#include <type_traits>

#include "core/parallel.h"
#include "kernels/attention.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/mixed_precision.h"
#include "kernels/quant.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"

namespace moepp {

std::vector<int32_t> sequence_positions(int64_t B, int64_t S) {
  std::vector<int32_t> pos(size_t(B * S));
  for (int64_t i = 0; i < B * S; ++i) pos[size_t(i)] = int32_t(i % S);
  return pos;
}

namespace {
AttentionShape shape_of(const ModelConfig& cfg, int64_t B, int64_t S) {
  return AttentionShape{B, S, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim()};
}
RopeConfig rope_of(const ModelConfig& cfg) { return RopeConfig{cfg.rope_theta, cfg.rope_linear_factor}; }
}  // namespace

template <typename T>
void attention_block_forward(const ModelConfig& cfg, const LayerWeights<T>& w, int layer, const RowBatch<T>& rows,
                             const T* x, AttentionCache<T>& c, T* h) {
  const int64_t n = rows.rows, D = cfg.hidden_size, H = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  const int64_t hd = cfg.head_dim(), kvD = Hkv * hd;
  c.a.fit({n, D});
  c.rstd.fit({n});
  c.q.fit({n, D});
  c.k.fit({n, kvD});
  c.v.fit({n, kvD});
  c.ctx.fit({n, D});
  rmsnorm_forward(x, w.input_norm, c.a.data(), c.rstd.data(), n, D, T(cfg.rms_norm_eps));
  {
    const RoundOnce<T> a(c.a.data(), n * D);
    linear(w.wq, c.a.data(), n, D, c.q.data(), D);
    linear(w.wk, c.a.data(), n, D, c.k.data(), kvD);
    linear(w.wv, c.a.data(), n, D, c.v.data(), kvD);
  }
  rope_forward(c.q.data(), rows.positions, n, H, hd, rope_of(cfg));
  rope_forward(c.k.data(), rows.positions, n, Hkv, hd, rope_of(cfg));
  if (rows.training()) {
    const AttentionShape shape = shape_of(cfg, rows.batch, rows.seq);
    c.softmax_stats.fit({softmax_stats_size(shape)});
    attention_forward(c.q.data(), c.k.data(), c.v.data(), c.ctx.data(), c.softmax_stats.data(), shape);
  } else {
    // Every new row's key and value go to its sequence's cache first, so that a row sees
    // the rows of its own sequence before it in this step too.
    // The step's caches hold one kind (decoder_step checks): bf16 ones take the rows rounded.
    const bool bf16 = rows.caches[0]->dtype() == KvDtype::bf16;
    c.keys.resize(bf16 ? 0 : size_t(n));
    c.values.resize(bf16 ? 0 : size_t(n));
    c.keys_bf16.resize(bf16 ? size_t(n) : 0);
    c.values_bf16.resize(bf16 ? size_t(n) : 0);
    c.context.resize(size_t(n));
    c.head_strides.resize(size_t(n));
    for (int64_t r = 0; r < n; ++r) {
      KvCache<T>& kv = *rows.caches[r];
      const int64_t pos = rows.positions[r];
      kv.store(layer, pos, c.k.data() + r * kvD, c.v.data() + r * kvD);
      if (bf16) {
        c.keys_bf16[size_t(r)] = kv.keys_bf16(layer);
        c.values_bf16[size_t(r)] = kv.values_bf16(layer);
      } else {
        c.keys[size_t(r)] = kv.keys(layer);
        c.values[size_t(r)] = kv.values(layer);
      }
      c.context[size_t(r)] = pos + 1;
      c.head_strides[size_t(r)] = kv.head_stride();
    }
    const AttentionRows<T> a{.rows = n, .q_heads = H, .kv_heads = Hkv, .head_dim = hd,
                             .keys = bf16 ? nullptr : c.keys.data(), .values = bf16 ? nullptr : c.values.data(),
                             .keys_bf16 = bf16 ? c.keys_bf16.data() : nullptr,
                             .values_bf16 = bf16 ? c.values_bf16.data() : nullptr, .context = c.context.data(),
                             .kv_stride = hd, .head_strides = c.head_strides.data()};
    attention_rows_forward(c.q.data(), a, c.ctx.data());
  }
  // h = x + ctx Wo^T
  if (h != x) parallel_for(n * D, [&](int64_t i) { h[i] = x[i]; }, 1 << 16);
  linear(w.wo, c.ctx.data(), n, D, h, D, /*accumulate=*/true);
}

template <typename T>
void attention_block_backward(const ModelConfig& cfg, const LayerParams<T>& w, const T* x,
                              int64_t B, int64_t S, const AttentionCache<T>& c, T* d, LayerParams<T>& g,
                              AttentionBackwardScratch<T>& scratch) {
  const int64_t n = B * S, D = cfg.hidden_size, H = cfg.num_attention_heads, Hkv = cfg.num_key_value_heads;
  const int64_t hd = cfg.head_dim(), kvD = Hkv * hd;
  // h = x + attention(rms1(x)): d, dL/dh, is already the residual path's share of dL/dx;
  // the two products below read it as dL/dh before rmsnorm_backward adds the rest.
  const T* dh = d;
  auto& [dctx, dq, dk, dv, da] = scratch;
  dctx.fit({n, D});
  dq.fit({n, D});
  dk.fit({n, kvD});
  dv.fit({n, kvD});
  da.fit({n, D});
  // attention_backward adds to dq, dk, dv; the products below overwrite dctx and da.
  parallel_zero({{dq.data(), size_t(n * D) * sizeof(T)}, {dk.data(), size_t(n * kvD) * sizeof(T)},
                 {dv.data(), size_t(n * kvD) * sizeof(T)}});
  {
    const RoundOnce<T> dh_once(dh, n * D);  // ends before rmsnorm_backward changes d
    gemm<T>(Trans::N, Trans::N, n, D, D, T(1), dh, D, w.wo.data(), D, T(0), dctx.data(), D);
    gemm<T>(Trans::T, Trans::N, D, D, n, T(1), dh, D, c.ctx.data(), D, T(1), g.wo.data(), D);
  }
  attention_backward(c.q.data(), c.k.data(), c.v.data(), c.softmax_stats.data(), dctx.data(), dq.data(),
                     dk.data(), dv.data(), shape_of(cfg, B, S));
  const auto pos = sequence_positions(B, S);
  rope_backward(dq.data(), pos.data(), n, H, hd, rope_of(cfg));
  rope_backward(dk.data(), pos.data(), n, Hkv, hd, rope_of(cfg));
  {
    const RoundOnce<T> a(c.a.data(), n * D), dq_once(dq.data(), n * D), dk_once(dk.data(), n * kvD),
        dv_once(dv.data(), n * kvD);
    gemm<T>(Trans::T, Trans::N, D, D, n, T(1), dq.data(), D, c.a.data(), D, T(1), g.wq.data(), D);
    gemm<T>(Trans::T, Trans::N, kvD, D, n, T(1), dk.data(), kvD, c.a.data(), D, T(1), g.wk.data(), D);
    gemm<T>(Trans::T, Trans::N, kvD, D, n, T(1), dv.data(), kvD, c.a.data(), D, T(1), g.wv.data(), D);
    gemm<T>(Trans::N, Trans::N, n, D, D, T(1), dq.data(), D, w.wq.data(), D, T(0), da.data(), D);
    gemm<T>(Trans::N, Trans::N, n, D, kvD, T(1), dk.data(), kvD, w.wk.data(), D, T(1), da.data(), D);
    gemm<T>(Trans::N, Trans::N, n, D, kvD, T(1), dv.data(), kvD, w.wv.data(), D, T(1), da.data(), D);
  }
  rmsnorm_backward(x, w.input_norm.data(), c.rstd.data(), da.data(), d, g.input_norm.data(), n, D);
}

template void attention_block_forward<float>(const ModelConfig&, const LayerWeights<float>&, int, const RowBatch<float>&, const float*, AttentionCache<float>&, float*);
template void attention_block_forward<double>(const ModelConfig&, const LayerWeights<double>&, int, const RowBatch<double>&, const double*, AttentionCache<double>&, double*);
template void attention_block_backward<float>(const ModelConfig&, const LayerParams<float>&, const float*, int64_t, int64_t, const AttentionCache<float>&, float*, LayerParams<float>&, AttentionBackwardScratch<float>&);
template void attention_block_backward<double>(const ModelConfig&, const LayerParams<double>&, const double*, int64_t, int64_t, const AttentionCache<double>&, double*, LayerParams<double>&, AttentionBackwardScratch<double>&);

}  // namespace moepp
