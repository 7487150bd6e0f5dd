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

// Packs t (the tensor `name`) as `type` (f32 when q8_0 or q4 cannot hold its rows) and
// frees it. A matrix the format refuses is named in the error.
PackedMatrix take(const std::string& name, Tensor<float>& t, WeightType type) {
  const Shape s = t.shape();
  const int64_t rows = s.rank() == 2 ? s[0] : 1, cols = s.rank() == 2 ? s[1] : s[0];
  if (!weight_type_fits(type, cols)) type = WeightType::f32;
  PackedMatrix p;
  try {
    p = PackedMatrix::pack(t.data(), rows, cols, type);
  } catch (const Error& e) {
    fail(name, ": ", e.what());
  }
  t = Tensor<float>();
  return p;
}

// Every packed matrix of m with its SPEC name; Model is PackedModel, const or not, with
// its layers (and their experts) in place.
template <typename Model, typename Fn>
void visit_packed(Model& m, Fn&& fn) {
  fn("model.embed_tokens.weight", m.embed);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto& P = m.layers[l];
    fn(pre + "self_attn.q_proj.weight", P.wq);
    fn(pre + "self_attn.k_proj.weight", P.wk);
    fn(pre + "self_attn.v_proj.weight", P.wv);
    fn(pre + "self_attn.o_proj.weight", P.wo);
    if (P.is_moe) {
      for (size_t e = 0; e < P.expert_up.size(); ++e) {
        const std::string ex = pre + "mlp.moe.experts.experts." + std::to_string(e) + ".";
        fn(ex + "up_proj.weight", P.expert_up[e]);
        fn(ex + "down_proj.weight", P.expert_down[e]);
      }
    } else {
      fn(pre + "mlp.gate_proj.weight", P.gate);
      fn(pre + "mlp.up_proj.weight", P.up);
      fn(pre + "mlp.down_proj.weight", P.down);
    }
  }
  if (!m.tied) fn("lm_head.weight", m.lm_head);
}

}  // namespace

std::unique_ptr<PackedModel> PackedModel::build(const ModelConfig& cfg, WeightType type, const Fill& fill,
                                                const PackedFill& packed_fill) {
  auto m = std::make_unique<PackedModel>();
  m->config = cfg;
  m->type = type;
  m->rest = ModelParams<float>::zeros(cfg, /*allocate=*/false);
  m->tied = m->rest.lm_head.numel() == 0;
  std::unordered_map<std::string, PackedMatrix> packed;
  m->rest.for_each(cfg, [&](const std::string& name, Tensor<float>& t) {
    const Shape want = t.shape();
    if (packed_fill && is_packed_tensor(name)) {
      PackedMatrix p;
      if (packed_fill(name, want, p)) {
        MOEPP_CHECK(p.type == type && p.rows == want[0] && p.cols == want[want.rank() - 1], "packed model: ", name,
                    " was given as ", weight_type_name(p.type), " [", p.rows, ", ", p.cols, "], expected ",
                    weight_type_name(type), " ", want.str());
        packed.emplace(name, std::move(p));
        t = Tensor<float>();  // as take() leaves it: the matrix lives in the packed model only
        return;
      }
    }
    fill(name, t);
    MOEPP_CHECK(t.shape() == want && t.allocated(), "packed model: ", name, " was filled with shape ", t.shape().str(),
                ", expected ", want.str());
    if (is_packed_tensor(name)) packed.emplace(name, take(name, t, type));
  });
  auto get = [&](const std::string& name) {
    auto it = packed.find(name);
    MOEPP_CHECK(it != packed.end(), "packed model: no packed tensor ", name);
    return std::move(it->second);
  };
  auto& w = m->rest;
  m->layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    auto& L = w.layers[l];
    if (!L.is_moe) continue;
    auto& P = m->layers[l];
    P.is_moe = true;
    P.expert_up.resize(L.moe.up.size());
    P.expert_down.resize(L.moe.down.size());
    L.moe.up.clear();
    L.moe.down.clear();
  }
  visit_packed(*m, [&](const std::string& name, PackedMatrix& p) { p = get(name); });
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
  visit_packed(*this, fn);
}

size_t PackedModel::packed_bytes() const {
  size_t b = 0;
  visit_packed(*this, [&](const std::string&, const PackedMatrix& p) { b += p.bytes(); });
  return b;
}

}  // namespace moepp
