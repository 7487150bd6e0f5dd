// ModelConfig: a whole decoder (SPEC §1, §3.2). Read from and written to a Hugging Face
// config.json (the released MoE++ keys plus moepp's own "moepp" block, which Hugging Face
// ignores); presets name the shapes moepp trains out of the box.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

struct ModelConfig {
  std::string model_type = "MoE++";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double rope_linear_factor = 1.0;  // rope_scaling {type: linear, factor}
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  int bos_token_id = 1, eos_token_id = 2, pad_token_id = -1;
  std::string torch_dtype = "float32";

  // MoE. `moe` holds the per-layer MoE++ configuration whole (SPEC §2): expert counts by
  // kind, top-k, gates, router shape, logit norm, input scaling, tau. Its hidden and
  // intermediate sizes are the decoder's, filled in by layer_moe(). Defaults: the released
  // model's keys, absent keys taking the official modeling code's defaults.
  MoeConfig moe = released_moe_defaults();
  int moe_expert_interval = 1;
  bool gating_residual = true;  // each MoE layer's router adds a map of the previous one's logits
  double balance_coef = 0.01;
  double capacity_factor = 0.0;  // SPEC §2.4, in training only (ModelCache::capacity_factor); 0: dropless

  int head_dim() const { return int(hidden_size / num_attention_heads); }
  int num_experts() const { return moe.num_experts(); }  // E, all kinds (HF num_experts: [E])
  int num_ffn_experts() const { return moe.num_ffn; }
  bool is_moe_layer(int l) const { return moe_expert_interval == 1 || (l + 1) % moe_expert_interval == 0; }
  int num_moe_layers() const;
  MoeConfig layer_moe() const;  // `moe` with the decoder's hidden and intermediate sizes

  // The official modeling code's defaults and the released model's moepp values: a
  // two-layer router, no logit norm, inputs scaled by k, 2 constant + 1 copy + 1 zero
  // experts, top-2, tau 0.75 (the FFN expert count comes from the config).
  static MoeConfig released_moe_defaults();

  // Throws moepp::Error naming the field and value when unusable or contradictory.
  void validate() const;

  // `source` names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  // A Mixtral config.json, run as moepp's vanilla MoE (no zero-computation experts, Mixtral
  // gates, no gating residual).
  static ModelConfig from_mixtral_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& path);
  nlohmann::json to_json() const;

  // tiny (tests), small (the demo), paper-0.6b (the MoE++ paper's 0.6B/(8+4)E shape);
  // vanilla=true gives the twin with no zero-computation experts.
  static ModelConfig preset(const std::string& name, int64_t vocab_size, bool vanilla = false);
  static std::vector<std::string> preset_names();
};

}  // namespace moepp
