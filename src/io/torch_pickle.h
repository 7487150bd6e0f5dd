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
