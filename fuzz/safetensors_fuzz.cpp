// libFuzzer target: the safetensors reader on arbitrary file contents (written to a file
// in /dev/shm, since the reader maps files). Any input must end in a validated file whose
// tensors all read back, or a moepp::Error.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "fuzz_file.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = moepp::fuzz::scratch_dir("safetensors") + "/model.safetensors";
  moepp::fuzz::write_bytes(path, data, size);
  try {
    moepp::SafetensorsFile st(path);
    for (const auto& [name, e] : st.entries()) st.read<float>(name);
  } catch (const moepp::Error&) {
  }
  return 0;
}
