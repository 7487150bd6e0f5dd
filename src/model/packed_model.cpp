#include "model/packed_model.h"

namespace moepp {

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

std::unique_ptr<PackedModel> PackedModel::pack(const ModelConfig& cfg, ModelParams<float>&& params, WeightType type) {
  auto m = std::make_unique<PackedModel>();
  m->config = cfg;
  m->type = type;
  m->rest = std::move(params);
  auto& w = m->rest;
  m->tied = w.lm_head.numel() == 0;
  m->embed = take(w.embed, type);
  if (!m->tied) m->lm_head = take(w.lm_head, type);
  m->layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    auto& P = m->layers[l];
    P.wq = take(L.wq, type);
    P.wk = take(L.wk, type);
    P.wv = take(L.wv, type);
    P.wo = take(L.wo, type);
    if (L.is_moe) {
      P.experts = std::make_unique<PackedExperts>();
      for (auto& u : L.moe.up) P.experts->up.push_back(take(u, type));
      for (auto& d : L.moe.down) P.experts->down.push_back(take(d, type));
      L.moe.up.clear();
      L.moe.down.clear();
      L.moe.packed = P.experts.get();
    } else {
      P.gate = take(L.gate, type);
      P.up = take(L.up, type);
      P.down = take(L.down, type);
    }
  }
  return m;
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
