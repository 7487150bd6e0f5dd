// pytorch_model.bin (SPEC §3.3): a torch.save zip archive read through ZipReader and the
// restricted unpickler. Every tensor's view (offset, shape, strides) is checked against
// its storage before anything is read; tensors convert to f32 on request (strided views
// are gathered). TorchBinShards follows pytorch_model.bin.index.json across shards.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/torch_pickle.h"
#include "io/zip_reader.h"

namespace moepp {

class TorchBinFile {
 public:
  explicit TorchBinFile(const std::string& path);  // throws moepp::Error naming file and field

  const std::vector<TorchTensorRef>& tensors() const { return refs_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TorchTensorRef& ref(const std::string& name) const;
  Tensor<float> read_f32(const std::string& name) const;
  const std::string& path() const { return zip_.path(); }

 private:
  ZipReader zip_;
  std::string prefix_;  // the archive's top folder, e.g. "archive/"
  std::vector<TorchTensorRef> refs_;
  std::map<std::string, size_t> index_;
};

// The shards of a folder's pytorch_model.bin.index.json ("weight_map": name -> file).
class TorchBinShards {
 public:
  explicit TorchBinShards(const std::string& dir);  // checks that every named shard exists
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor<float> read_f32(const std::string& name);
  std::vector<int64_t> shape(const std::string& name);
  std::vector<std::string> names() const;

 private:
  std::string dir_;
  std::map<std::string, std::string> where_;  // tensor -> shard file
  std::map<std::string, std::unique_ptr<TorchBinFile>> open_;
  TorchBinFile& shard_of(const std::string& name);
};

}  // namespace moepp
