// MoeConfig: the shape and behaviour of one MoE++ layer (SPEC §2). The expert pool is, in
// index order, N FFN experts, C constant, P copy and Z zero experts; a vanilla MoE is the
// same layer with C = P = Z = 0.
#pragma once
#include <cstdint>
#include <string>

namespace moepp {

enum class GateWeights { official, mixtral, softmax };
enum class ExpertKind { ffn, constant, copy, zero };

const char* gate_weights_name(GateWeights g);
GateWeights parse_gate_weights(const std::string& name);  // throws on an unknown name
const char* expert_kind_name(ExpertKind k);

struct MoeConfig {
  int64_t hidden = 0;        // D
  int64_t intermediate = 0;  // I
  int num_ffn = 0;           // N
  int num_constant = 0;      // C
  int num_copy = 0;          // P
  int num_zero = 0;          // Z
  int top_k = 2;
  GateWeights gate_weights = GateWeights::official;
  bool two_layer_router = false;  // z = W2 tanh(W1 x), W1 [8E, D]
  bool logits_norm = false;       // s = z / (std(z) / norm_std)
  double norm_std = 1.0;
  bool scale_inputs = true;       // experts receive k*x (not with mixtral gating)
  double balance_tau = 0.75;      // eta for zero-computation (incl. constant) experts

  int num_experts() const { return num_ffn + num_constant + num_copy + num_zero; }
  int num_zero_compute() const { return num_constant + num_copy + num_zero; }
  int router_hidden() const { return 8 * num_experts(); }
  ExpertKind kind(int e) const {
    if (e < num_ffn) return ExpertKind::ffn;
    if (e < num_ffn + num_constant) return ExpertKind::constant;
    if (e < num_ffn + num_constant + num_copy) return ExpertKind::copy;
    return ExpertKind::zero;
  }
  // The factor experts' inputs are multiplied by (SPEC §2.2 step 5).
  int input_scale() const {
    return scale_inputs && gate_weights != GateWeights::mixtral ? top_k : 1;
  }
  double eta(int e) const { return kind(e) == ExpertKind::ffn ? 1.0 : balance_tau; }

  // Throws moepp::Error naming the offending field when the configuration is unusable.
  void validate() const;
};

}  // namespace moepp
