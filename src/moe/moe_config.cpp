#include "moe/moe_config.h"

#include <cmath>

#include "core/error.h"

namespace moepp {

const char* gate_weights_name(GateWeights g) {
  switch (g) {
    case GateWeights::official: return "official";
    case GateWeights::mixtral: return "mixtral";
    case GateWeights::softmax: return "softmax";
  }
  return "?";
}

GateWeights parse_gate_weights(const std::string& name) {
  if (name == "official") return GateWeights::official;
  if (name == "mixtral") return GateWeights::mixtral;
  if (name == "softmax") return GateWeights::softmax;
  fail("gate_weights: unknown value \"", name, "\" (expected official, mixtral or softmax)");
}

const char* expert_kind_name(ExpertKind k) {
  switch (k) {
    case ExpertKind::ffn: return "ffn";
    case ExpertKind::constant: return "constant";
    case ExpertKind::copy: return "copy";
    case ExpertKind::zero: return "zero";
  }
  return "?";
}

void MoeConfig::validate() const {
  MOEPP_CHECK(hidden > 0, "moe config: hidden_size must be positive, got ", hidden);
  MOEPP_CHECK(intermediate > 0, "moe config: intermediate_size must be positive, got ", intermediate);
  MOEPP_CHECK(num_ffn >= 0 && num_constant >= 0 && num_copy >= 0 && num_zero >= 0,
              "moe config: expert counts must be non-negative (ffn ", num_ffn, ", constant ",
              num_constant, ", copy ", num_copy, ", zero ", num_zero, ")");
  MOEPP_CHECK(num_experts() > 0, "moe config: the expert pool is empty (E = 0)");
  MOEPP_CHECK(num_ffn > 0, "moe config: no FFN experts (N = 0) with ", num_zero_compute(),
              " zero-computation experts; a MoE++ layer needs at least one FFN expert");
  MOEPP_CHECK(top_k >= 1, "moe config: top_k must be at least 1, got ", top_k);
  MOEPP_CHECK(top_k <= num_experts(), "moe config: top_k = ", top_k,
              " exceeds the number of experts E = ", num_experts());
  MOEPP_CHECK(!logits_norm || num_experts() >= 2,
              "moe config: logit normalisation needs at least 2 experts");
  MOEPP_CHECK(std::isfinite(norm_std) && norm_std > 0, "moe config: moe_gate_norm_std must be positive, got ", norm_std);
  MOEPP_CHECK(std::isfinite(balance_tau) && balance_tau >= 0,
              "moe config: balance_tau must be non-negative, got ", balance_tau);
}

}  // namespace moepp
