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
#include "model/packed_model.h"
#include "model/params.h"

namespace moepp {

// config.json of a MoE++ or Mixtral folder as a ModelConfig.
ModelConfig read_hf_config(const std::string& dir);

// Reads one parameter by its SPEC name into t (whose shape cfg implies); maps Mixtral
// names. Before it returns, every tensor cfg implies is checked for presence and shape and
// the files for tensors cfg leaves unused, so nothing is allocated for a folder that
// contradicts its config. Given a keeper (what keeps src's mappings alive, src itself), a
// tensor src can lend in place (WeightSource::in_place_f32: an aligned F32 tensor of a
// copy-on-write mapping) is used there, not copied, and holds the keeper. src must outlive
// the reader.
std::function<void(const std::string&, Tensor<float>&)> hf_tensor_reader(const std::string& dir, const ModelConfig& cfg,
                                                                           WeightSource& src,
                                                                           std::shared_ptr<const void> keeper = nullptr);

// For PackedModel::build: a matrix stored as `type` blocks (q8_0 or q4, as `moepp
// convert` writes them) in a mapped file is taken as stored - the scales checked for shape
// and finiteness - instead of being widened to f32 and quantized again (which gives the
// same blocks, slower). A bf16 matrix stored as bf16 is taken as it is (checked for inf and
// NaN). Given a keeper (what keeps src's mappings alive, src itself), such a matrix is used
// in place: it views the mapped file, and the keeper lives as long as the matrix does;
// without one, or where parts must be joined (a Mixtral expert's w1 and w3), it is copied.
// src must outlive the returned function.
PackedModel::PackedFill hf_packed_reader(const std::string& dir, const ModelConfig& cfg, WeightSource& src,
                                         WeightType type, std::shared_ptr<const void> keeper = nullptr);

// Every parameter cfg implies, from the folder's weights, checked for presence and shape
// (in place where hf_tensor_reader can, given a keeper).
void read_hf_params(const std::string& dir, const ModelConfig& cfg, WeightSource& src, ModelParams<float>& params,
                    std::shared_ptr<const void> keeper = nullptr);

}  // namespace moepp
