// libFuzzer target: a pytorch_model.bin file of arbitrary bytes, read by the zip reader
// (every entry's bytes touched, so a pointer past the mapping is an ASan report) and then
// whole by TorchBinFile (zip + restricted unpickler + tensor views), every tensor
// converted to f32. Any input must end in a readable archive or a moepp::Error — never a
// crash, a hang, an out-of-memory or a sanitizer report. Seeds: the .bin fixtures.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "fuzz_file.h"
#include "io/torch_bin.h"
#include "io/zip_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = moepp::fuzz::scratch_dir("zip") + "/pytorch_model.bin";
  moepp::fuzz::write_bytes(path, data, size);
  try {
    moepp::ZipReader zip(path);
    uint64_t sum = 0;
    for (const auto& [name, e] : zip.entries()) {
      const moepp::ZipEntry again = zip.entry(name);
      if (again.data != e.data || again.size != e.size) __builtin_trap();
      for (uint64_t i = 0; i < e.size; ++i) sum += e.data[i];
    }
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const moepp::Error&) {
    return 0;
  }
  try {
    moepp::TorchBinFile bin(path);
    for (const auto& ref : bin.tensors()) bin.read_f32(ref.name);
  } catch (const moepp::Error&) {
  }
  return 0;
}
