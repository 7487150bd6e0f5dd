// Model folders (SPEC §3.1): moepp writes config.json + model.safetensors (+ tokenizer.model),
// which is also what its checkpoints are; it loads any layout hf_folder reads (safetensors,
// sharded or not, pytorch_model.bin, sharded or not; MoE++ or Mixtral configs). Loading
// checks every tensor the config implies for presence and shape before any is used, and
// names the offender.
#pragma once
#include <string>

#include "io/digest.h"
#include "model/config.h"
#include "model/packed_model.h"
#include "model/params.h"

namespace moepp {

struct LoadedModel {
  ModelConfig config;
  ModelParams<float> params;
  std::string dir;
};

// Writes config.json and model.safetensors (f32), each atomically; copies tokenizer_model
// into the folder as tokenizer.model when given.
void save_model_folder(const std::string& dir, const ModelConfig& cfg, const ModelParams<float>& params,
                       const std::string& tokenizer_model = "");

struct LoadOptions {
  // Use the f32 tensors of the folder's safetensors files where they lie, in a copy-on-write
  // mapping (those moepp wrote: each starts on a 64-byte boundary), instead of copying them
  // into memory of their own; others are copied as usual. Loading then costs next to
  // nothing when the files are in the page cache, but on this project's VM a decode read
  // such pages 10% slower (median of 12 rounds) than freshly allocated ones
  // (docs/decisions.md), so the default copies.
  bool in_place = false;
};

LoadedModel load_model_folder(const std::string& dir, const LoadOptions& options = {});

// The folder's weights packed as `type` for inference, read one tensor at a time (the f32
// model is never held whole: a bf16 MoE++7B folder loads in ~15 GB as bf16, ~8.7 GB as q8_0).
std::unique_ptr<PackedModel> load_packed_model_folder(const std::string& dir, WeightType type);

// The folder's config.json alone; throws "not a model folder" when there is none.
ModelConfig load_model_config(const std::string& dir);

// Reads `prefix + name` for every parameter of cfg from a safetensors file into params.
// Throws naming the file and tensor on a missing tensor or a shape that contradicts cfg.
void read_params(const std::string& path, const ModelConfig& cfg, ModelParams<float>& params,
                 const std::string& prefix = "");
// Returns the written file's size and digest (checkpoint manifests).
FileStamp write_params(const std::string& path, const ModelConfig& cfg, const ModelParams<float>& params,
                  const std::string& prefix = "");


}  // namespace moepp
