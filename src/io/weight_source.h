// WeightSource: the named tensors of a model folder, whatever the file layout -
// model.safetensors, sharded safetensors with model.safetensors.index.json,
// pytorch_model.bin, or sharded .bin with pytorch_model.bin.index.json - read as f32
// (bf16, f16 and moepp's q8_0 and q4 widened). A tensor read is dropped from the resident
// set (the mapped files' pages are released), so loading a model never holds its files. Files only: what the tensors mean (configs, the
// Mixtral name mapping, shapes) is model/hf_folder's business.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "io/mapped_file.h"

namespace moepp {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) = 0;
  virtual std::vector<std::string> names() = 0;  // every tensor the files hold
  virtual std::vector<int64_t> shape(const std::string& name) = 0;
  virtual Tensor<float> read_f32(const std::string& name) = 0;
  virtual std::string describe() const = 0;  // the file(s), for error messages

  // A tensor's bytes as stored, where the source maps its files (safetensors): loaders of
  // quantized folders take q8_0 / q4 blocks from them as they are. Valid while the source
  // lives; nullopt where the source converts everything it reads (pytorch_model.bin).
  struct Raw {
    DType dtype;
    std::vector<int64_t> shape;  // as stored
    const uint8_t* data;
    size_t bytes;
    std::string file;  // for error messages
  };
  virtual std::optional<Raw> raw(const std::string& name) { (void)name; return std::nullopt; }
  // Once a tensor's raw bytes have been copied: its pages may leave the resident set
  // (read_f32 does this itself). Reading it again stays correct.
  virtual void release(const std::string& name) { (void)name; }
  // An f32 tensor usable in place as a Tensor's storage (stored as F32 on a 64-byte
  // boundary in a file opened copy_on_write; SafetensorsFile::in_place_f32), valid while
  // the source lives; null otherwise (read it with read_f32).
  virtual float* in_place_f32(const std::string& name) { (void)name; return nullptr; }

  // Picks the layout present in dir; throws when there is none. copy_on_write maps
  // safetensors files writable-private, so their f32 tensors can be used in place.
  static std::unique_ptr<WeightSource> open(const std::string& dir, MapMode mode = MapMode::read_only);
};

}  // namespace moepp
