#include "moe/moe_params.h"

#include "core/error.h"

namespace moepp {

namespace {
struct Expected {
  Shape wg, w1, w2, gate_map, up, down, constant, constant_wg;
};

Expected expected_shapes(const MoeConfig& cfg) {
  const int64_t E = cfg.num_experts(), D = cfg.hidden, I = cfg.intermediate, H = cfg.router_hidden();
  Expected s;
  s.wg = cfg.two_layer_router ? Shape{0} : Shape{E, D};
  s.w1 = cfg.two_layer_router ? Shape{H, D} : Shape{0};
  s.w2 = cfg.two_layer_router ? Shape{E, H} : Shape{0};
  s.gate_map = Shape{E, E};
  s.up = Shape{2 * I, D};
  s.down = Shape{D, I};
  s.constant = Shape{D};
  s.constant_wg = Shape{2, D};
  return s;
}
}  // namespace

template <typename T>
MoeParams<T> MoeParams<T>::zeros(const MoeConfig& cfg, bool allocate) {
  cfg.validate();
  const Expected s = expected_shapes(cfg);
  MoeParams p;
  if (cfg.two_layer_router) {
    p.w1.shape_as(s.w1, allocate);
    p.w2.shape_as(s.w2, allocate);
  } else {
    p.wg.shape_as(s.wg, allocate);
  }
  p.gate_map.shape_as(s.gate_map, allocate);
  for (int i = 0; i < cfg.num_ffn; ++i) {
    p.up.emplace_back().shape_as(s.up, allocate);
    p.down.emplace_back().shape_as(s.down, allocate);
  }
  for (int i = 0; i < cfg.num_constant; ++i) {
    p.constant.emplace_back().shape_as(s.constant, allocate);
    p.constant_wg.emplace_back().shape_as(s.constant_wg, allocate);
  }
  return p;
}

template <typename T>
void MoeParams<T>::for_each(const MoeConfig& cfg,
                            const std::function<void(const std::string&, Tensor<T>&)>& fn) {
  if (cfg.two_layer_router) {
    fn("gate.wg.0.weight", w1);
    fn("gate.wg.2.weight", w2);
  } else {
    fn("gate.wg.weight", wg);
  }
  fn("gate.gate_map.weight", gate_map);
  for (size_t i = 0; i < up.size(); ++i) {
    fn("experts." + std::to_string(i) + ".up_proj.weight", up[i]);
    fn("experts." + std::to_string(i) + ".down_proj.weight", down[i]);
  }
  for (size_t c = 0; c < constant.size(); ++c) {
    const std::string e = std::to_string(size_t(cfg.num_ffn) + c);
    fn("experts." + e + ".constant", constant[c]);
    fn("experts." + e + ".wg.weight", constant_wg[c]);
  }
}

template <typename T>
void MoeParams<T>::init_normal(Rng& rng, double std) {
  auto fill = [&](Tensor<T>& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = T(rng.normal() * std);
  };
  fill(wg); fill(w1); fill(w2); fill(gate_map);
  for (auto& t : up) fill(t);
  for (auto& t : down) fill(t);
  for (auto& t : constant) fill(t);
  for (auto& t : constant_wg) fill(t);
}

template <typename T>
void MoeParams<T>::zero() {
  zero_outside_ffn_experts();
  for (auto* v : {&up, &down})
    for (auto& t : *v) t.zero();
}

template <typename T>
void MoeParams<T>::zero_outside_ffn_experts() {
  wg.zero(); w1.zero(); w2.zero(); gate_map.zero();
  for (auto* v : {&constant, &constant_wg})
    for (auto& t : *v) t.zero();
}

namespace {
template <typename T>
void check_shape(const char* name, const Tensor<T>& t, const Shape& want) {
  MOEPP_CHECK(t.shape() == want, "moe layer: tensor ", name, " has shape ", t.shape().str(), ", expected ", want.str());
}
}  // namespace

template <typename T>
void MoeParams<T>::check_router_shapes(const MoeConfig& cfg) const {
  const Expected s = expected_shapes(cfg);
  if (cfg.two_layer_router) {
    check_shape("gate.wg.0.weight", w1, s.w1);
    check_shape("gate.wg.2.weight", w2, s.w2);
  } else {
    check_shape("gate.wg.weight", wg, s.wg);
  }
  check_shape("gate.gate_map.weight", gate_map, s.gate_map);
  MOEPP_CHECK(constant.size() == size_t(cfg.num_constant) && constant_wg.size() == size_t(cfg.num_constant),
              "moe layer: ", constant.size(), " constant experts present, config says ", cfg.num_constant);
  for (size_t c = 0; c < constant.size(); ++c) {
    const std::string e = std::to_string(size_t(cfg.num_ffn) + c);
    check_shape(("experts." + e + ".constant").c_str(), constant[c], s.constant);
    check_shape(("experts." + e + ".wg.weight").c_str(), constant_wg[c], s.constant_wg);
  }
}

template <typename T>
void MoeParams<T>::check_shapes(const MoeConfig& cfg) const {
  check_router_shapes(cfg);
  const Expected s = expected_shapes(cfg);
  MOEPP_CHECK(up.size() == size_t(cfg.num_ffn) && down.size() == size_t(cfg.num_ffn),
              "moe layer: ", up.size(), " FFN experts present, config says ", cfg.num_ffn);
  for (size_t i = 0; i < up.size(); ++i) {
    check_shape(("experts." + std::to_string(i) + ".up_proj.weight").c_str(), up[i], s.up);
    check_shape(("experts." + std::to_string(i) + ".down_proj.weight").c_str(), down[i], s.down);
  }
}

template struct MoeParams<float>;
template struct MoeParams<double>;

}  // namespace moepp
