// libFuzzer target: the restricted unpickler on arbitrary bytes. Any input must end in a
// parsed state dict or a moepp::Error — never a crash, a hang or a sanitizer report.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    moepp::parse_state_dict_pickle(data, size, "fuzz");
  } catch (const moepp::Error&) {
  }
  return 0;
}
