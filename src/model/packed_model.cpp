#include "model/packed_model.h"

#include <malloc.h>

#include <unordered_map>

#include "core/error.h"

namespace moepp {

bool is_packed_tensor(const std::string& name) {
  static const std::string proj = "_proj.weight";
  return name == "model.embed_tokens.weight" || name == "lm_head.weight" ||
         (name.size() > proj.size() && name.compare(name.size() - proj.size(), proj.size(), proj) == 0);
}

namespace {

// Packs t as `type` (f32 when q8_0 cannot hold its rows) and frees it.
PackedMatrix take(Tensor<float>& t, WeightType type) {
  const Shape s = t.shape();
  const int64_t rows = s.rank() == 2 ? s[0] : 1, cols = s.rank() == 2 ? s[1] : s[0];
  if (type == WeightType::q8_0 && cols % kQ8Block != 0) type = WeightType::f32;
  PackedMatrix p = PackedMatrix::pack(t.data(), rows, cols, type);
  t = Tensor<float>();
  return p;
}

}  // namespace

std::unique_ptr<PackedModel> PackedModel::build(const ModelConfig& cfg, WeightType type, const Fill& fill) {
  auto m = std::make_unique<PackedModel>();
  m->config = cfg;
  m->type = type;
  m->rest = ModelParams<float>::zeros(cfg, /*allocate=*/false);
  m->tied = m->rest.lm_head.numel() == 0;
  std::unordered_map<std::string, PackedMatrix> packed;
  m->rest.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
    const Shape want = t.shape();
    fill(name, t);
    MOEPP_CHECK(t.shape() == want && t.allocated(), "packed model: ", name, " was filled with shape ", t.shape().str(),
                ", expected ", want.str());
    if (is_packed_tensor(name)) packed.emplace(name, take(t, type));
  });
  auto get = [&](const std::string& name) {
    auto it = packed.find(name);
    MOEPP_CHECK(it != packed.end(), "packed model: no packed tensor ", name);
    return std::move(it->second);
  };
  m->embed = get("model.embed_tokens.weight");
  if (!m->tied) m->lm_head = get("lm_head.weight");
  auto& w = m->rest;
  m->layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto& P = m->layers[l];
    P.wq = get(pre + "self_attn.q_proj.weight");
    P.wk = get(pre + "self_attn.k_proj.weight");
    P.wv = get(pre + "self_attn.v_proj.weight");
    P.wo = get(pre + "self_attn.o_proj.weight");
    auto& L = w.layers[l];
    if (L.is_moe) {
      P.experts = std::make_unique<PackedExperts>();
      for (size_t e = 0; e < L.moe.up.size(); ++e) {
        const std::string ex = pre + "mlp.moe.experts.experts." + std::to_string(e) + ".";
        P.experts->up.push_back(get(ex + "up_proj.weight"));
        P.experts->down.push_back(get(ex + "down_proj.weight"));
      }
      L.moe.up.clear();
      L.moe.down.clear();
      L.moe.packed = P.experts.get();
    } else {
      P.gate = get(pre + "mlp.gate_proj.weight");
      P.up = get(pre + "mlp.up_proj.weight");
      P.down = get(pre + "mlp.down_proj.weight");
    }
  }
  // The f32 staging tensors were freed between packed allocations; hand the holes they
  // left in the heap back to the system (a 7B load otherwise keeps ~3 GB of them).
  malloc_trim(0);
  return m;
}

std::unique_ptr<PackedModel> PackedModel::pack(const ModelConfig& cfg, ModelParams<float>&& params, WeightType type) {
  std::unordered_map<std::string, Tensor<float>*> source;
  params.for_each(cfg, [&](const std::string& name, Tensor<float>& t) { source.emplace(name, &t); });
  return build(cfg, type, [&](const std::string& name, Tensor<float>& t) {
    auto it = source.find(name);
    MOEPP_CHECK(it != source.end(), "packed model: the parameters lack ", name);
    t = std::move(*it->second);
  });
}

void PackedModel::for_each_packed(const std::function<void(const std::string&, const PackedMatrix&)>& fn) const {
  fn("model.embed_tokens.weight", embed);
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    const auto& P = layers[l];
    fn(pre + "self_attn.q_proj.weight", P.wq);
    fn(pre + "self_attn.k_proj.weight", P.wk);
    fn(pre + "self_attn.v_proj.weight", P.wv);
    fn(pre + "self_attn.o_proj.weight", P.wo);
    if (P.experts) {
      for (size_t e = 0; e < P.experts->up.size(); ++e) {
        const std::string ex = pre + "mlp.moe.experts.experts." + std::to_string(e) + ".";
        fn(ex + "up_proj.weight", P.experts->up[e]);
        fn(ex + "down_proj.weight", P.experts->down[e]);
      }
    } else {
      fn(pre + "mlp.gate_proj.weight", P.gate);
      fn(pre + "mlp.up_proj.weight", P.up);
      fn(pre + "mlp.down_proj.weight", P.down);
    }
  }
  if (!tied) fn("lm_head.weight", lm_head);
}

size_t PackedModel::packed_bytes() const {
  size_t b = embed.bytes() + lm_head.bytes();
  for (const auto& L : layers) {
    b += L.wq.bytes() + L.wk.bytes() + L.wv.bytes() + L.wo.bytes() + L.gate.bytes() + L.up.bytes() + L.down.bytes();
    if (L.experts)
      for (size_t e = 0; e < L.experts->up.size(); ++e) b += L.experts->up[e].bytes() + L.experts->down[e].bytes();
  }
  return b;
}

}  // namespace moepp
