#include "model/params.h"

#include <cmath>

#include "core/parallel.h"

namespace moepp {

template <typename T>
ModelParams<T> ModelParams<T>::zeros(const ModelConfig& cfg, bool allocate) {
  cfg.validate();
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t kvD = int64_t(cfg.num_key_value_heads) * cfg.head_dim();
  ModelParams p;
  p.embed.shape_as(Shape{V, D}, allocate);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    LayerParams<T> L;
    L.input_norm.shape_as(Shape{D}, allocate);
    L.post_norm.shape_as(Shape{D}, allocate);
    L.wq.shape_as(Shape{D, D}, allocate);
    L.wk.shape_as(Shape{kvD, D}, allocate);
    L.wv.shape_as(Shape{kvD, D}, allocate);
    L.wo.shape_as(Shape{D, D}, allocate);
    L.is_moe = cfg.is_moe_layer(l);
    if (L.is_moe) {
      L.moe = MoeParams<T>::zeros(cfg.layer_moe(), allocate);
    } else {
      L.gate.shape_as(Shape{I, D}, allocate);
      L.up.shape_as(Shape{I, D}, allocate);
      L.down.shape_as(Shape{D, I}, allocate);
    }
    p.layers.push_back(std::move(L));
  }
  p.final_norm.shape_as(Shape{D}, allocate);
  if (!cfg.tie_word_embeddings) p.lm_head.shape_as(Shape{V, D}, allocate);
  return p;
}

template <typename T>
void ModelParams<T>::for_each(const ModelConfig& cfg,
                              const std::function<void(const std::string&, Tensor<T>&)>& fn) {
  fn("model.embed_tokens.weight", embed);
  const MoeConfig mc = cfg.layer_moe();
  for (size_t l = 0; l < layers.size(); ++l) {
    auto& L = layers[l];
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    fn(pre + "input_layernorm.weight", L.input_norm);
    fn(pre + "post_attention_layernorm.weight", L.post_norm);
    fn(pre + "self_attn.q_proj.weight", L.wq);
    fn(pre + "self_attn.k_proj.weight", L.wk);
    fn(pre + "self_attn.v_proj.weight", L.wv);
    fn(pre + "self_attn.o_proj.weight", L.wo);
    if (L.is_moe) {
      L.moe.for_each(mc, [&](const std::string& n, Tensor<T>& t) {
        // SPEC §3.1 nests the experts one level deeper: experts.experts.i
        const std::string name = n.rfind("experts.", 0) == 0 ? "experts." + n : n;
        fn(pre + "mlp.moe." + name, t);
      });
    } else {
      fn(pre + "mlp.gate_proj.weight", L.gate);
      fn(pre + "mlp.up_proj.weight", L.up);
      fn(pre + "mlp.down_proj.weight", L.down);
    }
  }
  fn("model.norm.weight", final_norm);
  if (lm_head.numel()) fn("lm_head.weight", lm_head);
}

template <typename T>
void ModelParams<T>::for_each(const ModelConfig& cfg,
                              const std::function<void(const std::string&, const Tensor<T>&)>& fn) const {
  const_cast<ModelParams*>(this)->for_each(cfg, [&](const std::string& n, Tensor<T>& t) { fn(n, t); });
}

template <typename T>
void ModelParams<T>::init(const ModelConfig& cfg, Rng& rng) {
  const double std = cfg.initializer_range;
  for_each(cfg, [&](const std::string& name, Tensor<T>& t) {
    const bool norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight";
    const bool gate_map = name.find("gate_map") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i)
      t[i] = norm ? T(1) : gate_map ? T(0) : T(rng.normal() * std);
  });
}

template <typename T>
void ModelParams<T>::zero() {
  zero_outside_moe_layers();
  for (auto& L : layers) L.moe.zero();
}

template <typename T>
void ModelParams<T>::zero_outside_moe_layers() {
  // Every training step zeroes these (the embedding's and LM head's gradients are the
  // largest), so the threads share it.
  std::vector<std::pair<void*, size_t>> blocks;
  const auto add = [&](Tensor<T>& t) {
    if (t.data()) blocks.emplace_back(t.data(), size_t(t.numel()) * sizeof(T));
  };
  add(embed);
  add(final_norm);
  add(lm_head);
  for (auto& L : layers)
    for (auto* t : {&L.input_norm, &L.post_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) add(*t);
  parallel_zero(blocks);
}

template <typename T>
int64_t ModelParams<T>::numel(const ModelConfig& cfg) const {
  int64_t n = 0;
  for_each(cfg, [&](const std::string&, const Tensor<T>& t) { n += t.numel(); });
  return n;
}

int64_t total_params(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab_size, D = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t kvD = int64_t(cfg.num_key_value_heads) * cfg.head_dim();
  const MoeConfig m = cfg.layer_moe();
  const int64_t E = m.num_experts();
  const int64_t router = m.two_layer_router ? 8 * E * D + E * 8 * E : E * D;
  int64_t n = V * D * (cfg.tie_word_embeddings ? 1 : 2) + D;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    n += 2 * D + 2 * D * D + 2 * kvD * D;
    n += cfg.is_moe_layer(l) ? router + E * E + m.num_ffn * 3 * D * I + m.num_constant * 3 * D : 3 * D * I;
  }
  return n;
}

int64_t activated_params(const ModelConfig& cfg, double ffn_per_token) {
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size;
  const MoeConfig m = cfg.layer_moe();
  const double inactive = (double(m.num_ffn) - ffn_per_token) * 3.0 * double(D) * double(I);
  return total_params(cfg) - int64_t(std::llround(inactive * cfg.num_moe_layers()));
}

template struct ModelParams<float>;
template struct ModelParams<double>;

}  // namespace moepp
