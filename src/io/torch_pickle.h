// A restricted unpickler for the data.pkl of a torch.save'd state dict (SPEC §3.3). It
// understands the opcodes a state dict needs and exactly these globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the
// typed storage classes (torch.FloatStorage, ...). Any other global, any other opcode, or
// a malformed stream is an error naming the byte offset; nothing is ever executed — the
// "calls" are interpreted, never made.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace moepp {

// Resource limits (docs/robustness.md): a hostile stream is refused before it can grow
// past a few tens of MB. The largest real state dicts (thousands of tensors) use a few
// percent of each.
constexpr size_t kPickleMaxBytes = size_t(64) << 20;  // data.pkl size
constexpr uint64_t kPickleMaxOps = uint64_t(1) << 22;  // opcodes executed
constexpr size_t kPickleMaxValues = size_t(1) << 19;   // values created (also memo entries)
constexpr size_t kPickleMaxStack = size_t(1) << 20;    // values on the stack at once
constexpr int kPickleMaxDepth = 32;                    // container nesting

// A tensor as the pickle describes it: a view into a storage saved as data/<key>.
struct TorchTensorRef {
  std::string name;
  DType dtype = DType::f32;
  std::string storage_key;
  int64_t storage_numel = 0;  // elements the pickle says the storage holds
  int64_t offset = 0;         // in elements
  std::vector<int64_t> shape, stride;
};

// Parses data.pkl bytes; `source` names the file in errors. Returns the state dict's
// entries in order.
std::vector<TorchTensorRef> parse_state_dict_pickle(const uint8_t* data, size_t size, const std::string& source);

}  // namespace moepp
