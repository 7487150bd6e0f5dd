// libFuzzer target: config.json of arbitrary bytes in a model folder, read the way every
// command reads it (read_hf_config: a MoE++ config, or a Mixtral one mapped to a vanilla
// MoE). An accepted config must answer its derived questions (head_dim, FFN experts, the
// per-layer MoE config) without a sanitizer report, and survive a round trip through the
// config.json moepp writes: from_json(to_json()) accepts it and gives it back unchanged.
// Anything else must be a moepp::Error. Seeds: the fixtures' config.json files.
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "core/error.h"
#include "fuzz_file.h"
#include "model/hf_folder.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = moepp::fuzz::scratch_dir("config");
  moepp::fuzz::write_bytes(dir + "/config.json", data, size);
  moepp::ModelConfig cfg;
  try {
    cfg = moepp::read_hf_config(dir);
  } catch (const moepp::Error&) {
    return 0;
  }
  volatile int64_t sink = cfg.head_dim() + cfg.num_ffn_experts() + cfg.num_moe_layers();
  for (int l = 0; l < cfg.num_hidden_layers && l < 4096; ++l) sink = sink + cfg.is_moe_layer(l);
  (void)cfg.layer_moe();
  const nlohmann::json written = cfg.to_json();
  try {
    const moepp::ModelConfig again = moepp::ModelConfig::from_json(written, "round trip");
    if (again.to_json() != written) {
      std::fprintf(stderr, "config round trip changed the config:\n%s\n%s\n", written.dump().c_str(),
                   again.to_json().dump().c_str());
      __builtin_trap();
    }
  } catch (const moepp::Error& e) {
    std::fprintf(stderr, "an accepted config does not read back from its own config.json: %s\n%s\n", e.what(),
                 written.dump().c_str());
    __builtin_trap();
  }
  return 0;
}
