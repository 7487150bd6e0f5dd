#include "model/config.h"

#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "core/error.h"
#include "io/json_file.h"

namespace moepp {

using json = nlohmann::json;

namespace {

// Keys a Hugging Face config.json may carry that do not change the computation.
const std::set<std::string>& ignorable_keys() {
  static const std::set<std::string> k = {
      "architectures", "auto_map", "transformers_version", "use_cache", "_name_or_path",
      "attention_dropout", "pretraining_tp", "output_router_logits", "router_aux_loss_coef",
      "router_jitter_noise", "sliding_window", "attention_bias", "mlp_bias", "torch_dtype",
      "model_type", "hidden_act", "num_experts_per_tok", "num_local_experts", "id2label",
      "label2id", "tokenizer_class", "initializer_range", "bos_token_id", "eos_token_id",
      "pad_token_id", "rope_scaling", "moepp",
      "quantization_config"};  // the tensors themselves say how they are stored (io/weight_source)
  return k;
}

// Reads j[key] into out only when the JSON value has exactly out's kind: an integer field
// refuses 1.5, true and values outside its range (4294967297 layers must not load as 1),
// a flag refuses 0/1, a number refuses strings and non-finite values.
template <typename V>
void read(const json& j, const char* key, V& out, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return;
  const json& v = j[key];
  auto wrong = [&](const char* want) {
    fail(src, ": field ", key, " has value ", v.dump(), " of the wrong type; it must be ", want);
  };
  if constexpr (std::is_same_v<V, bool>) {
    if (!v.is_boolean()) wrong("true or false");
    out = v.get<bool>();
  } else if constexpr (std::is_integral_v<V>) {
    if (!v.is_number_integer()) wrong("an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      wrong("an integer in range");
    const int64_t x = v.get<int64_t>();
    if (x < int64_t(std::numeric_limits<V>::min()) || x > int64_t(std::numeric_limits<V>::max()))
      fail(src, ": field ", key, " has value ", v.dump(), ", outside the range [", std::numeric_limits<V>::min(),
           ", ", std::numeric_limits<V>::max(), "]");
    out = V(x);
  } else if constexpr (std::is_floating_point_v<V>) {
    if (!v.is_number()) wrong("a number");
    out = v.get<V>();
    if (!std::isfinite(out)) wrong("a finite number");
  } else {
    if (!v.is_string()) wrong("a string");
    out = v.get<V>();
  }
}

// The LLaMA-style keys MoE++ and Mixtral configs share; absent keys keep c's values
// (num_key_value_heads defaults to num_attention_heads).
void read_decoder_shape(const json& j, ModelConfig& c, const std::string& src) {
  read(j, "vocab_size", c.vocab_size, src);
  read(j, "hidden_size", c.hidden_size, src);
  read(j, "intermediate_size", c.intermediate_size, src);
  read(j, "num_hidden_layers", c.num_hidden_layers, src);
  read(j, "num_attention_heads", c.num_attention_heads, src);
  c.num_key_value_heads = c.num_attention_heads;
  read(j, "num_key_value_heads", c.num_key_value_heads, src);
  read(j, "max_position_embeddings", c.max_position_embeddings, src);
  read(j, "rms_norm_eps", c.rms_norm_eps, src);
  read(j, "rope_theta", c.rope_theta, src);
  read(j, "tie_word_embeddings", c.tie_word_embeddings, src);
}

}  // namespace

int ModelConfig::num_moe_layers() const {
  int n = 0;
  for (int l = 0; l < num_hidden_layers; ++l) n += is_moe_layer(l);
  return n;
}

MoeConfig ModelConfig::released_moe_defaults() {
  MoeConfig m;
  m.num_constant = 2;
  m.num_copy = 1;
  m.num_zero = 1;
  m.top_k = 2;
  m.gate_weights = GateWeights::official;
  m.two_layer_router = true;
  m.logits_norm = false;
  m.norm_std = 1.0;
  m.scale_inputs = true;
  m.balance_tau = 0.75;
  return m;
}

MoeConfig ModelConfig::layer_moe() const {
  MoeConfig m = moe;
  m.hidden = hidden_size;
  m.intermediate = intermediate_size;
  return m;
}

void ModelConfig::validate() const {
  auto positive = [](const char* name, double v) {
    MOEPP_CHECK(v > 0, "config: ", name, " must be positive, got ", v);
  };
  positive("vocab_size", double(vocab_size));
  positive("hidden_size", double(hidden_size));
  positive("intermediate_size", double(intermediate_size));
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("max_position_embeddings", double(max_position_embeddings));
  positive("rms_norm_eps", rms_norm_eps);
  positive("rope_theta", rope_theta);
  positive("rope_scaling.factor", rope_linear_factor);
  // Upper bounds far above any released model keep every shape product (and the parameter
  // count) inside int64, so a hostile config cannot wrap a size into a small allocation.
  auto at_most = [](const char* name, int64_t v, int64_t limit) {
    MOEPP_CHECK(v <= limit, "config: ", name, " ", v, " is larger than moepp supports (", limit, ")");
  };
  at_most("vocab_size", vocab_size, int64_t(1) << 24);
  at_most("hidden_size", hidden_size, int64_t(1) << 16);
  at_most("intermediate_size", intermediate_size, int64_t(1) << 18);
  at_most("num_hidden_layers", num_hidden_layers, 1024);
  at_most("num_attention_heads", num_attention_heads, 1024);
  at_most("num_experts", num_experts(), 4096);
  at_most("max_position_embeddings", max_position_embeddings, int64_t(1) << 24);
  MOEPP_CHECK(std::isfinite(rms_norm_eps) && std::isfinite(rope_theta) && std::isfinite(rope_linear_factor),
              "config: rms_norm_eps, rope_theta and rope_scaling.factor must be finite");
  MOEPP_CHECK(hidden_size % num_attention_heads == 0, "config: hidden_size ", hidden_size,
              " is not a multiple of num_attention_heads ", num_attention_heads);
  MOEPP_CHECK(head_dim() % 2 == 0, "config: head_dim ", head_dim(), " must be even for RoPE");
  MOEPP_CHECK(num_attention_heads % num_key_value_heads == 0, "config: num_attention_heads ",
              num_attention_heads, " is not a multiple of num_key_value_heads ", num_key_value_heads);
  MOEPP_CHECK(moe_expert_interval >= 1, "config: moe_expert_interval must be at least 1, got ", moe_expert_interval);
  MOEPP_CHECK(num_moe_layers() > 0, "config: no layer is an MoE layer (num_hidden_layers ",
              num_hidden_layers, ", moe_expert_interval ", moe_expert_interval, ")");
  MOEPP_CHECK(std::isfinite(capacity_factor) && capacity_factor >= 0, "config: moepp.capacity_factor must be ",
              "non-negative (0: dropless), got ", capacity_factor);
  MOEPP_CHECK(capacity_factor == 0.0 || moe.num_zero_compute() == 0 || moe.balance_tau > 0,
              "config: moepp.capacity_factor ", capacity_factor, " with moepp.balance_tau = 0 gives FFN experts ",
              "no slot (SPEC §2.4: gamma*tau*S / (tau*N + n)); set tau above 0 or the factor to 0");
  MOEPP_CHECK(balance_coef >= 0, "config: moepp.balance_coef must be non-negative, got ", balance_coef);
  MOEPP_CHECK(moe.num_ffn >= 0, "config: num_experts ", num_experts(), " is smaller than the ",
              moe.num_zero_compute(), " zero-computation experts of the moepp block");
  layer_moe().validate();
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  MOEPP_CHECK(j.is_object(), src, ": config is not a JSON object");
  ModelConfig c;
  read(j, "model_type", c.model_type, src);
  MOEPP_CHECK(c.model_type == "MoE++", src, ": model_type \"", c.model_type,
              "\" is not supported here (expected \"MoE++\")");
  for (auto it = j.begin(); it != j.end(); ++it) {
    static const std::set<std::string> known = {
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rms_norm_eps",
        "rope_theta", "tie_word_embeddings", "num_experts", "moe_expert_interval",
        "moe_use_mixtral_gating", "moe_2layer_gate", "moe_use_logits_norm", "moe_gate_norm_std",
        "moe_feature_no_mul_topk"};
    const std::string& k = it.key();
    if (known.count(k) || ignorable_keys().count(k)) continue;
    // An unknown MoE setting would silently change nothing: refuse it.
    MOEPP_CHECK(k.rfind("moe", 0) != 0, src, ": unknown field ", k);
  }
  read_decoder_shape(j, c, src);
  read(j, "initializer_range", c.initializer_range, src);
  read(j, "bos_token_id", c.bos_token_id, src);
  read(j, "eos_token_id", c.eos_token_id, src);
  read(j, "pad_token_id", c.pad_token_id, src);
  read(j, "torch_dtype", c.torch_dtype, src);
  if (j.contains("hidden_act") && !j["hidden_act"].is_null())
    MOEPP_CHECK(j["hidden_act"] == "silu", src, ": hidden_act ", j["hidden_act"].dump(), " is not supported (silu only)");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    MOEPP_CHECK(rs.is_object(), src, ": rope_scaling is not an object");
    const std::string type = rs.value("type", rs.value("rope_type", std::string("linear")));
    MOEPP_CHECK(type == "linear", src, ": rope_scaling type \"", type, "\" is not supported yet (linear only)");
    read(rs, "factor", c.rope_linear_factor, src + " rope_scaling");
  }
  int total_experts = 0;  // E, all kinds: the FFN count is E less the moepp block's others
  if (j.contains("num_experts")) {
    const json& ne = j["num_experts"];
    if (ne.is_array()) {
      MOEPP_CHECK(ne.size() == 1, src, ": num_experts ", ne.dump(), " must be a one-element list [E]");
      read(json{{"num_experts", ne[0]}}, "num_experts", total_experts, src);
    } else {
      read(j, "num_experts", total_experts, src);
    }
  }
  MoeConfig& moe = c.moe;
  bool mixtral_gating = false, no_mul_topk = !moe.scale_inputs;
  read(j, "moe_expert_interval", c.moe_expert_interval, src);
  read(j, "moe_use_mixtral_gating", mixtral_gating, src);
  read(j, "moe_2layer_gate", moe.two_layer_router, src);
  read(j, "moe_use_logits_norm", moe.logits_norm, src);
  read(j, "moe_gate_norm_std", moe.norm_std, src);
  read(j, "moe_feature_no_mul_topk", no_mul_topk, src);
  moe.scale_inputs = !no_mul_topk;
  if (mixtral_gating) moe.gate_weights = GateWeights::mixtral;
  if (j.contains("moepp")) {
    const json& m = j["moepp"];
    const std::string msrc = src + " moepp";
    MOEPP_CHECK(m.is_object(), src, ": the moepp block is not an object");
    static const std::set<std::string> known = {
        "num_constant_experts", "num_copy_experts", "num_zero_experts", "top_k", "gating_residual",
        "gate_weights", "balance_coef", "balance_tau", "capacity_factor"};
    for (auto it = m.begin(); it != m.end(); ++it)
      MOEPP_CHECK(known.count(it.key()), src, ": unknown field moepp.", it.key());
    read(m, "num_constant_experts", moe.num_constant, msrc);
    read(m, "num_copy_experts", moe.num_copy, msrc);
    read(m, "num_zero_experts", moe.num_zero, msrc);
    read(m, "top_k", moe.top_k, msrc);
    read(m, "gating_residual", c.gating_residual, msrc);
    if (m.contains("gate_weights")) {
      MOEPP_CHECK(m["gate_weights"].is_string(), src, ": moepp.gate_weights is not a string");
      moe.gate_weights = parse_gate_weights(m["gate_weights"].get<std::string>());
    }
    read(m, "balance_coef", c.balance_coef, msrc);
    read(m, "balance_tau", moe.balance_tau, msrc);
    read(m, "capacity_factor", c.capacity_factor, msrc);
  }
  // The HF flag and moepp's gate names say the same thing twice: they must agree.
  MOEPP_CHECK(mixtral_gating == (moe.gate_weights == GateWeights::mixtral), src, ": config: moe_use_mixtral_gating is ",
              mixtral_gating ? "true" : "false", " but moepp.gate_weights is \"", gate_weights_name(moe.gate_weights),
              "\"");
  moe.num_ffn = total_experts - moe.num_zero_compute();
  try {
    c.validate();
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  return c;
}

ModelConfig ModelConfig::from_mixtral_json(const json& j, const std::string& src) {
  MOEPP_CHECK(j.is_object(), src, ": config is not a JSON object");
  auto required = [&](const char* k) {
    MOEPP_CHECK(j.contains(k) && !j[k].is_null(), src, ": field ", k, " is missing");
  };
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_local_experts", "num_experts_per_tok"})
    required(k);
  ModelConfig c;
  c.model_type = "MoE++";  // moepp runs it as its vanilla MoE
  c.max_position_embeddings = 4096;  // Mixtral's defaults where the keys are absent
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 1e6;
  read_decoder_shape(j, c, src);
  read(j, "num_local_experts", c.moe.num_ffn, src);
  read(j, "num_experts_per_tok", c.moe.top_k, src);
  c.moe.num_constant = c.moe.num_copy = c.moe.num_zero = 0;
  c.moe.gate_weights = GateWeights::mixtral;
  c.moe.two_layer_router = false;
  c.moe.logits_norm = false;
  c.gating_residual = false;
  c.moe_expert_interval = 1;
  if (j.contains("hidden_act") && !j["hidden_act"].is_null())
    MOEPP_CHECK(j["hidden_act"] == "silu", src, ": hidden_act ", j["hidden_act"].dump(), " is not supported (silu only)");
  try {
    c.validate();
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {"MoEPPForCausalLM"};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["rope_scaling"] = rope_linear_factor == 1.0 ? json(nullptr) : json{{"type", "linear"}, {"factor", rope_linear_factor}};
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["initializer_range"] = initializer_range;
  j["hidden_act"] = "silu";
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["pad_token_id"] = pad_token_id < 0 ? json(nullptr) : json(pad_token_id);
  j["torch_dtype"] = torch_dtype;
  j["num_experts"] = {num_experts()};
  j["moe_expert_interval"] = moe_expert_interval;
  j["moe_use_mixtral_gating"] = moe.gate_weights == GateWeights::mixtral;
  j["moe_2layer_gate"] = moe.two_layer_router;
  j["moe_use_logits_norm"] = moe.logits_norm;
  j["moe_gate_norm_std"] = moe.norm_std;
  j["moe_feature_no_mul_topk"] = !moe.scale_inputs;
  j["moepp"] = {{"num_constant_experts", moe.num_constant}, {"num_copy_experts", moe.num_copy},
                {"num_zero_experts", moe.num_zero}, {"top_k", moe.top_k},
                {"gating_residual", gating_residual}, {"gate_weights", gate_weights_name(moe.gate_weights)},
                {"balance_coef", balance_coef}, {"balance_tau", moe.balance_tau},
                {"capacity_factor", capacity_factor}};
  return j;
}

namespace {
struct Preset {
  const char* name;
  int64_t hidden, intermediate;
  int layers, heads, kv_heads;
  int64_t context;
  int ffn_experts;
};
constexpr Preset kPresets[] = {
    {"tiny", 32, 48, 2, 4, 2, 128, 4},
    {"small", 256, 512, 4, 8, 4, 512, 8},
    {"paper-0.6b", 768, 2048, 12, 12, 12, 2048, 8},  // the MoE++ paper's 0.6B/(8+4)E
};
}  // namespace

std::vector<std::string> ModelConfig::preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.push_back(p.name);
  return names;
}

ModelConfig ModelConfig::preset(const std::string& name, int64_t vocab, bool vanilla) {
  const Preset* p = nullptr;
  for (const auto& q : kPresets)
    if (name == q.name) p = &q;
  MOEPP_CHECK(p, "unknown preset \"", name, "\" (known: tiny, small, paper-0.6b)");
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = p->hidden;
  c.intermediate_size = p->intermediate;
  c.num_hidden_layers = p->layers;
  c.num_attention_heads = p->heads;
  c.num_key_value_heads = p->kv_heads;
  c.max_position_embeddings = p->context;
  // The released model's router settings: linear router with logit norm, no input scaling.
  c.moe.two_layer_router = false;
  c.moe.logits_norm = true;
  c.moe.scale_inputs = false;
  if (vanilla) {
    // The twin of every comparison: a plain top-k MoE, no gating residual.
    c.moe.num_constant = c.moe.num_copy = c.moe.num_zero = 0;
    c.gating_residual = false;
  } else {
    c.moe.num_constant = 2;
    c.moe.num_copy = 1;
    c.moe.num_zero = 1;
  }
  c.moe.num_ffn = p->ffn_experts;
  c.validate();
  return c;
}

}  // namespace moepp
