#include "model/transformer.h"

#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/mixed_precision.h"
#include "kernels/rmsnorm.h"

namespace moepp {

std::vector<int32_t> next_token_targets(const int32_t* ids, int64_t n) {
  std::vector<int32_t> t(size_t(n), -1);
  for (int64_t i = 0; i + 1 < n; ++i) t[size_t(i)] = ids[i + 1];
  return t;
}

namespace {
template <typename T>
RowBatch<T> training_rows(const ModelCache<T>& c) {
  RowBatch<T> rows;
  rows.rows = c.batch * c.seq;
  rows.positions = c.positions.data();
  rows.batch = c.batch;
  rows.seq = c.seq;
  return rows;
}
}  // namespace

template <typename T>
void model_forward(const ModelConfig& cfg, const ModelParams<T>& w, const int32_t* ids,
                   int64_t B, int64_t S, ModelCache<T>& c) {
  const int64_t n = B * S, D = cfg.hidden_size, V = cfg.vocab_size;
  MOEPP_CHECK(B >= 1 && S >= 1, "model: empty batch (", B, " x ", S, ")");
  MOEPP_CHECK(S <= cfg.max_position_embeddings, "model: sequence of ", S,
              " tokens exceeds max_position_embeddings ", cfg.max_position_embeddings);
  const DecoderWeights<T> dw = DecoderWeights<T>::of(w);
  c.batch = B;
  c.seq = S;
  c.ids.assign(ids, ids + n);
  c.positions = sequence_positions(B, S);
  c.layers.resize(w.layers.size());
  const RowBatch<T> rows = training_rows(c);
  // Each layer's input is kept in its cache for the backward, and the layer writes the
  // next one's (or x_final) in place of the last step's.
  const auto input_of = [&](size_t l) -> Tensor<T>& { return l < c.layers.size() ? c.layers[l].x : c.x_final; };
  input_of(0).fit({n, D});
  gather_rows(dw.embed, ids, n, input_of(0).data());
  int last_moe = -1;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    auto& lc = c.layers[l];
    const T* z_prev = nullptr;
    if (w.layers[l].is_moe) {
      lc.z_from = cfg.gating_residual ? last_moe : -1;
      if (lc.z_from >= 0) z_prev = c.layers[size_t(lc.z_from)].moe.router.z.data();
      last_moe = int(l);
    }
    lc.moe.comm = c.comm;
    lc.moe.capacity_factor = c.capacity_factor;
    Tensor<T>& x_out = input_of(l + 1);
    x_out.fit({n, D});
    decoder_layer_forward(cfg, dw.layers[l], int(l), rows, lc.x.data(), z_prev, lc, x_out.data());
  }
  c.normed.fit({n, D});
  c.rstd_final.fit({n});
  rmsnorm_forward(c.x_final.data(), w.final_norm.data(), c.normed.data(), c.rstd_final.data(), n, D, T(cfg.rms_norm_eps));
  c.logits.fit({n, V});
  linear(dw.output, c.normed.data(), n, D, c.logits.data(), V);
}

namespace {
template <typename T>
double mean_balance(const ModelConfig& cfg, const ModelCache<T>& c) {
  double sum = 0;
  int count = 0;
  for (size_t l = 0; l < c.layers.size(); ++l)
    if (cfg.is_moe_layer(int(l))) {
      sum += c.layers[l].moe.balance_loss;
      ++count;
    }
  return count ? sum / count : 0.0;
}
}  // namespace

template <typename T>
LossParts model_loss(const ModelConfig& cfg, const ModelCache<T>& c, const int32_t* targets) {
  LossParts p;
  p.lm_loss = cross_entropy_forward(c.logits.data(), targets, c.batch * c.seq, cfg.vocab_size);
  p.balance_loss = mean_balance(cfg, c);
  p.loss = p.lm_loss + cfg.balance_coef * p.balance_loss;
  return p;
}

template <typename T>
LossParts model_backward(const ModelConfig& cfg, const ModelParams<T>& w, ModelCache<T>& c,
                         const int32_t* targets, ModelParams<T>& g, GradMode mode) {
  const int64_t B = c.batch, S = c.seq, n = B * S, D = cfg.hidden_size, V = cfg.vocab_size;
  if (mode == GradMode::overwrite) g.zero_outside_moe_layers();  // moe_backward overwrites its own
  const MoeConfig mc = cfg.layer_moe();
  LossParts p;
  Tensor<T>& dlogits = c.dlogits;
  dlogits.fit({n, V});
  // Under bf16 products the logits' gradient is written rounded, once: its two products
  // read nothing else (1% of a small-preset step at vocabulary 4000, more as it grows).
  bool bf16_dlogits = false;
  if constexpr (std::is_same_v<T, float>) bf16_dlogits = gemm_precision() == GemmPrecision::bf16;
  auto lm_loss_and_gradient = [&](T dloss) {
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_dlogits) {
        c.dlogits_bf16.resize(size_t(n * V));
        return cross_entropy_fused_bf16(c.logits.data(), targets, n, V, dloss, c.dlogits_bf16.data());
      }
    }
    return cross_entropy_fused(c.logits.data(), targets, n, V, dloss, dlogits.data());
  };
  if (c.comm) {
    // This rank's rows weigh by their share of the batch's counted targets, and the mean
    // loss reported is the batch's.
    double counted[2] = {0, 0};
    for (int64_t i = 0; i < n; ++i) counted[0] += targets[i] >= 0 ? 1.0 : 0.0;
    counted[1] = counted[0];
    c.comm->sum_all(counted + 1, 1);
    const double share = counted[1] > 0 ? counted[0] / counted[1] : 0.0;
    double lm = share * lm_loss_and_gradient(T(share));
    c.comm->sum_all(&lm, 1);
    p.lm_loss = lm;
  } else {
    p.lm_loss = lm_loss_and_gradient(T(1));
  }
  p.balance_loss = mean_balance(cfg, c);
  p.loss = p.lm_loss + cfg.balance_coef * p.balance_loss;
  const double dbalance = cfg.balance_coef / cfg.num_moe_layers();

  // LM head and final norm.
  Tensor<T>& dnormed = c.dnormed;
  Tensor<T>& dx = c.dx;
  dnormed.fit({n, D});
  dx.fit({n, D});
  parallel_zero({{dx.data(), size_t(n * D) * sizeof(T)}});  // rmsnorm_backward adds to it
  Tensor<T>& dout_w = g.lm_head.numel() ? g.lm_head : g.embed;
  {
    const RoundOnce<T> dlogits_once(dlogits.data(), n * V, bf16_dlogits ? c.dlogits_bf16.data() : nullptr);
    gemm<T>(Trans::N, Trans::N, n, D, V, T(1), dlogits.data(), V, w.output_weights().data(), D, T(0), dnormed.data(), D);
    gemm<T>(Trans::T, Trans::N, V, D, n, T(1), dlogits.data(), V, c.normed.data(), D, T(1), dout_w.data(), D);
  }
  rmsnorm_backward(c.x_final.data(), w.final_norm.data(), c.rstd_final.data(), dnormed.data(), dx.data(),
                   g.final_norm.data(), n, D);
  const int L = int(w.layers.size());
  if (c.grads_ready) c.grads_ready(L);

  // Layers, last to first. dz[l]: gradient w.r.t. MoE layer l's router logits z, filled
  // by the later MoE layer that took them as its gating residual.
  std::vector<Tensor<T>> dz(w.layers.size());
  const RowBatch<T> rows = training_rows(c);
  for (size_t l = w.layers.size(); l-- > 0;) {
    auto& lc = c.layers[l];
    const T* z_prev = nullptr;
    T* dz_prev = nullptr;
    if (w.layers[l].is_moe && lc.z_from >= 0) {
      z_prev = c.layers[size_t(lc.z_from)].moe.router.z.data();
      auto& target = dz[size_t(lc.z_from)];
      if (!target.numel()) target.resize({n, int64_t(mc.num_experts())});
      dz_prev = target.data();
    }
    decoder_layer_backward(cfg, w.layers[l], rows, z_prev, lc, dz[l].numel() ? dz[l].data() : nullptr, dbalance,
                           dx.data(), dz_prev, g.layers[l], mode, c.layer_scratch);
    if (c.grads_ready) c.grads_ready(int(l));
  }
  embedding_backward(c.ids.data(), n, dx.data(), g.embed.data(), V, D);
  if (c.grads_ready) c.grads_ready(-1);
  return p;
}

template <typename T>
std::vector<RoutingStats> routing_stats_of(const ModelConfig& cfg, const ModelCache<T>& c) {
  std::vector<RoutingStats> out;
  for (size_t l = 0; l < c.layers.size(); ++l)
    if (cfg.is_moe_layer(int(l))) out.push_back(c.layers[l].moe.stats);
  return out;
}

template void model_forward<float>(const ModelConfig&, const ModelParams<float>&, const int32_t*, int64_t, int64_t, ModelCache<float>&);
template void model_forward<double>(const ModelConfig&, const ModelParams<double>&, const int32_t*, int64_t, int64_t, ModelCache<double>&);
template LossParts model_loss<float>(const ModelConfig&, const ModelCache<float>&, const int32_t*);
template LossParts model_loss<double>(const ModelConfig&, const ModelCache<double>&, const int32_t*);
template LossParts model_backward<float>(const ModelConfig&, const ModelParams<float>&, ModelCache<float>&, const int32_t*, ModelParams<float>&, GradMode);
template LossParts model_backward<double>(const ModelConfig&, const ModelParams<double>&, ModelCache<double>&, const int32_t*, ModelParams<double>&, GradMode);
template std::vector<RoutingStats> routing_stats_of<float>(const ModelConfig&, const ModelCache<float>&);
template std::vector<RoutingStats> routing_stats_of<double>(const ModelConfig&, const ModelCache<double>&);

}  // namespace moepp
