// moepp info: architecture, parameter counts (total / activated) and the expert pool.
#include <cstdio>

#include "cli/commands.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "model/params.h"

namespace moepp::cli {

void add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Architecture, parameter counts and expert pool of a model folder (JSON)");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("--model", *dir, "Model folder")->required();
  cmd->callback([dir] {
    const ModelConfig c = load_model_config(*dir);
    const MoeConfig m = c.layer_moe();
    // The folder's own model_type (a Mixtral folder says "mixtral"), and how moepp runs it.
    const nlohmann::json raw = read_json_file(*dir + "/config.json");
    const std::string folder_type = raw.value("model_type", c.model_type);
    nlohmann::json j = {
        {"model_type", folder_type},
        {"runs_as", folder_type == c.model_type ? c.model_type : c.model_type + " (vanilla MoE: no zero-computation experts, no gating residual)"},
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"layers", c.num_hidden_layers},
        {"moe_layers", c.num_moe_layers()},
        {"heads", c.num_attention_heads},
        {"kv_heads", c.num_key_value_heads},
        {"experts", {{"ffn", m.num_ffn}, {"constant", m.num_constant}, {"copy", m.num_copy}, {"zero", m.num_zero},
                     {"top_k", m.top_k}}},
        {"router", {{"kind", m.two_layer_router ? "2-layer tanh" : "linear"}, {"gate_weights", gate_weights_name(m.gate_weights)},
                    {"logits_norm", m.logits_norm}, {"inputs_scaled_by_k", m.input_scale() != 1},
                    {"gating_residual", c.gating_residual}}},
        {"parameters", {{"total", total_params(c)},
                        {"activated_all_ffn_slots", activated_params(c, double(m.top_k))},
                        {"note", "activated = total minus the FFN experts a token does not use, with all k slots on FFN experts; "
                                 "MoE++ tokens that pick zero-computation experts activate fewer"}}}};
    // How the folder stores its weights: a quantized folder says so in quantization_config.
    j["weights"] = raw.contains("quantization_config") && raw["quantization_config"].is_object()
                       ? raw["quantization_config"].value("quant_method", std::string("quantized"))
                       : raw.value("torch_dtype", std::string("float32"));
    std::printf("%s\n", j.dump(2).c_str());
  });
}

}  // namespace moepp::cli
