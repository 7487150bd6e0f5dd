// config.json: the released keys, the moepp block, defaults, and one clear error for each
// unknown or contradictory field.
#include "model/config.h"

#include "core/error.h"

#include <gtest/gtest.h>

using namespace moepp;
using json = nlohmann::json;

namespace {

// The released MoE++7B's config.json keys (no moepp block).
json released() {
  return json::parse(R"({
    "architectures": ["MoEPPForCausalLM"], "model_type": "MoE++", "vocab_size": 65536,
    "hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 24,
    "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": false,
    "num_experts": [20], "moe_expert_interval": 1, "moe_use_mixtral_gating": false,
    "moe_2layer_gate": false, "moe_use_logits_norm": true, "moe_gate_norm_std": 1.0,
    "moe_feature_no_mul_topk": true, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.2", "use_cache": true})");
}

void expect_error(const json& j, const std::string& needle) {
  try {
    ModelConfig::from_json(j, "cfg.json");
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << "the error names the file: " << e.what();
  }
}

}  // namespace

TEST(Config, ReleasedKeysWithoutMoeppBlockGiveTheReleasedPool) {
  const ModelConfig c = ModelConfig::from_json(released(), "cfg.json");
  EXPECT_EQ(c.num_experts(), 20);
  EXPECT_EQ(c.num_ffn_experts(), 16);
  const MoeConfig m = c.layer_moe();
  EXPECT_EQ(m.num_constant, 2);
  EXPECT_EQ(m.num_copy, 1);
  EXPECT_EQ(m.num_zero, 1);
  EXPECT_EQ(m.top_k, 2);
  EXPECT_FALSE(m.two_layer_router);
  EXPECT_TRUE(m.logits_norm);
  EXPECT_EQ(m.input_scale(), 1);
  EXPECT_EQ(m.gate_weights, GateWeights::official);
  EXPECT_TRUE(c.gating_residual);
  EXPECT_EQ(c.head_dim(), 96);
  EXPECT_EQ(c.num_moe_layers(), 24);
}

TEST(Config, AbsentMoeKeysTakeTheModelingCodeDefaults) {
  json j = released();
  for (const char* k : {"moe_2layer_gate", "moe_use_logits_norm", "moe_feature_no_mul_topk"}) j.erase(k);
  const MoeConfig m = ModelConfig::from_json(j, "cfg.json").layer_moe();
  EXPECT_TRUE(m.two_layer_router);
  EXPECT_FALSE(m.logits_norm);
  EXPECT_EQ(m.input_scale(), 2);
}

TEST(Config, RoundTripsThroughJson) {
  ModelConfig c = ModelConfig::preset("small", 4000);
  c.moe.balance_tau = 0.25;
  c.moe_expert_interval = 2;
  const ModelConfig d = ModelConfig::from_json(c.to_json(), "x");
  EXPECT_EQ(c.to_json(), d.to_json());
  EXPECT_EQ(d.moe.balance_tau, 0.25);
}

TEST(Config, VanillaPresetHasNoZeroComputationExpertsAndTheSameFfns) {
  const ModelConfig pp = ModelConfig::preset("paper-0.6b", 32000), van = ModelConfig::preset("paper-0.6b", 32000, true);
  EXPECT_EQ(pp.num_ffn_experts(), 8);
  EXPECT_EQ(van.num_ffn_experts(), 8);
  EXPECT_EQ(van.num_experts(), 8);
  EXPECT_EQ(pp.num_experts(), 12);
  EXPECT_FALSE(van.gating_residual);
}

TEST(ConfigBadInput, UnknownMoeppField) {
  json j = released();
  j["moepp"] = {{"balance_tua", 0.5}};
  expect_error(j, "unknown field moepp.balance_tua");
}

TEST(Config, CapacityFactorIsReadAndWrittenBack) {
  json j = released();
  j["moepp"] = {{"capacity_factor", 1.25}};
  const ModelConfig c = ModelConfig::from_json(j, "config.json");
  c.validate();
  EXPECT_EQ(c.capacity_factor, 1.25);
  EXPECT_EQ(c.to_json()["moepp"]["capacity_factor"].get<double>(), 1.25);
}

TEST(ConfigBadInput, UnknownMoeSettingAtTopLevel) {
  json j = released();
  j["moe_use_capacity"] = true;
  expect_error(j, "unknown field moe_use_capacity");
}

TEST(ConfigBadInput, MixtralFlagContradictsGateWeights) {
  json j = released();
  j["moe_use_mixtral_gating"] = true;
  j["moepp"] = {{"gate_weights", "official"}};
  expect_error(j, "moe_use_mixtral_gating is true but moepp.gate_weights is \"official\"");
}

TEST(ConfigBadInput, PoolSmallerThanItsZeroComputationExperts) {
  json j = released();
  j["num_experts"] = {3};
  expect_error(j, "num_experts 3 is smaller than the 4 zero-computation experts");
}

TEST(ConfigBadInput, WrongTypeHeadsThatDoNotDivideAndUnsupportedCapacity) {
  json j = released();
  j["hidden_size"] = "big";
  expect_error(j, "field hidden_size has value \"big\" of the wrong type");
  j = released();
  j["num_key_value_heads"] = 5;
  expect_error(j, "not a multiple of num_key_value_heads 5");
  j = released();
  j["moepp"] = {{"capacity_factor", -0.5}};
  expect_error(j, "capacity_factor must be non-negative (0: dropless), got -0.5");
  j = released();
  j["moepp"] = {{"capacity_factor", 1.25}, {"balance_tau", 0.0}};
  expect_error(j, "capacity_factor 1.25 with moepp.balance_tau = 0 gives FFN experts no slot");
  j = released();
  j["model_type"] = "llama";
  expect_error(j, "model_type \"llama\"");
}
