// libFuzzer target: the safetensors reader on arbitrary file contents (written to a file
// in /dev/shm, since the reader maps files). Any input must end in a validated file whose
// tensors all read back, or a moepp::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/moepp-fuzz-" + std::to_string(getpid()) + ".safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    moepp::SafetensorsFile st(path);
    for (const auto& [name, e] : st.entries()) st.read<float>(name);
  } catch (const moepp::Error&) {
  }
  return 0;
}
