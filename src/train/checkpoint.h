// Checkpoints, atomic as a set. A run folder is a model folder (config.json,
// model.safetensors, tokenizer.model) plus optimizer moments (optimizer.{m,v}.safetensors)
// and trainer_state.json; since every file must be of the same step, they are written into
// a fresh folder RUN/checkpoints/step-N-K/ and published by one atomic symlink rename of
// RUN/current. The top-level names are fixed links into current/, so the run folder reads
// as a model folder everywhere. trainer_state.json, written last, carries a manifest (size
// and digest of every other file); loading checks it and names any file that disagrees.
// A kill at any moment leaves the previous checkpoint or the new one, never a mix.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"
#include "model/params.h"
#include "train/optimizer.h"

namespace moepp {

// state must hold "step" (the checkpoint folder's name).
void save_checkpoint(const std::string& run_dir, const ModelConfig& cfg, const ModelParams<float>& params,
                     AdamW& opt, const nlohmann::json& state, const std::string& tokenizer_model);

// The folder holding the run's latest complete checkpoint: RUN/current, or RUN itself for a
// run written before checkpoints were folders.
std::string checkpoint_dir(const std::string& run_dir);

// The trainer state of the run's checkpoint in force, its fields checked (steps and loader
// position non-negative, optimizer step equal to the step); throws naming the file.
nlohmann::json read_checkpoint_state(const std::string& run_dir);

// Loads params, optimizer moments and step of the checkpoint whose state (from
// read_checkpoint_state) is `state`, after checking every file against its manifest.
void load_checkpoint(const std::string& run_dir, const nlohmann::json& state, const ModelConfig& cfg,
                     ModelParams<float>& params, AdamW& opt);

// Throws naming the folder when run_dir cannot be created or written.
void ensure_writable_dir(const std::string& run_dir);

// Removes what killed writers left in the run folder (temporaries, unpublished checkpoint
// folders); call it only while holding the folder's lock. Returns what it removed.
std::vector<std::string> clean_run_folder(const std::string& run_dir);

}  // namespace moepp
