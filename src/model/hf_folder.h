// Hugging Face model folders in every layout moepp reads (SPEC §3.1): weights as
// model.safetensors, sharded safetensors with model.safetensors.index.json,
// pytorch_model.bin, or sharded .bin with pytorch_model.bin.index.json; config.json of
// model_type "MoE++" or "mixtral" (loaded as a vanilla MoE: block_sparse_moe names, w1/w3
// fused into up_proj, mixtral gates, no gating residual).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "io/weight_source.h"
#include "model/params.h"

namespace moepp {

// config.json of a MoE++ or Mixtral folder as a ModelConfig.
ModelConfig read_hf_config(const std::string& dir);

// Reads one parameter by its SPEC name into t (whose shape cfg implies); maps Mixtral
// names. Before it returns, every tensor cfg implies is checked for presence and shape and
// the files for tensors cfg leaves unused, so nothing is allocated for a folder that
// contradicts its config. src must outlive the reader.
std::function<void(const std::string&, Tensor<float>&)> hf_tensor_reader(const std::string& dir, const ModelConfig& cfg,
                                                                           WeightSource& src);

// Every parameter cfg implies, from the folder's weights, checked for presence and shape.
void read_hf_params(const std::string& dir, const ModelConfig& cfg, WeightSource& src, ModelParams<float>& params);

}  // namespace moepp
