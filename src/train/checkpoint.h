// Checkpoints: a run folder is a model folder (config.json, model.safetensors,
// tokenizer.model) plus optimizer.safetensors (AdamW moments under "m."/"v." + the SPEC
// tensor names) and trainer_state.json. Every file is written atomically and
// trainer_state.json last, so a folder whose state file exists is complete.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/params.h"
#include "train/optimizer.h"

namespace moepp {

void save_checkpoint(const std::string& run_dir, const ModelConfig& cfg, const ModelParams<float>& params,
                     AdamW& opt, const nlohmann::json& state, const std::string& tokenizer_model);

// Loads params, optimizer moments and step; returns the trainer state.
nlohmann::json load_checkpoint(const std::string& run_dir, const ModelConfig& cfg, ModelParams<float>& params,
                               AdamW& opt);

// Throws naming the folder when run_dir cannot be created or written.
void ensure_writable_dir(const std::string& run_dir);

}  // namespace moepp
