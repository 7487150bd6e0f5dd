#include "moe/moe_weights.h"

#include "core/error.h"

namespace moepp {

template <typename T>
void MoeWeights<T>::check_shapes(const MoeConfig& cfg, int first_held, int held) const {
  MOEPP_CHECK(params, "moe layer: no parameters");
  params->check_router_shapes(cfg);
  const int64_t D = cfg.hidden, I = cfg.intermediate;
  MOEPP_CHECK(up.size() == size_t(cfg.num_ffn) && down.size() == size_t(cfg.num_ffn),
              "moe layer: ", up.size(), " FFN experts present, config says ", cfg.num_ffn);
  if (held < 0) held = cfg.num_ffn;
  for (size_t e = 0; e < up.size(); ++e) {
    const bool needed = int(e) >= first_held && int(e) < first_held + held;
    MOEPP_CHECK((!needed || !up[e].empty()) && up[e].rows == 2 * I && up[e].cols == D, "moe layer: tensor experts.", e,
                ".up_proj.weight has shape [", up[e].rows, ", ", up[e].cols, "], expected [", 2 * I, ", ", D, "]");
    MOEPP_CHECK((!needed || !down[e].empty()) && down[e].rows == D && down[e].cols == I, "moe layer: tensor experts.", e,
                ".down_proj.weight has shape [", down[e].rows, ", ", down[e].cols, "], expected [", D, ", ", I, "]");
  }
}

template struct MoeWeights<float>;
template struct MoeWeights<double>;

}  // namespace moepp
