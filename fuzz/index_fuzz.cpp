// libFuzzer target: a sharded folder's weight index (model.safetensors.index.json /
// pytorch_model.bin.index.json) of arbitrary bytes, read by read_weight_index in a folder
// that holds the fixtures' four shard names as empty files. Its contract (io/json_file.h):
// every shard it returns is a plain file name that exists in the folder — checked here,
// so a name that leaves the folder or names the folder itself is a failure. Anything else
// must be a moepp::Error. Seeds: the fixtures' *.index.json files.
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "core/error.h"
#include "fuzz_file.h"
#include "io/json_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = moepp::fuzz::scratch_dir("index");
    for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                              "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"})
      moepp::fuzz::write_bytes(d + "/" + shard, nullptr, 0);
    return d;
  }();
  const std::string index = size % 2 ? "model.safetensors.index.json" : "pytorch_model.bin.index.json";
  moepp::fuzz::write_bytes(dir + "/" + index, data, size);
  try {
    for (const auto& [tensor, shard] : moepp::read_weight_index(dir, index)) {
      struct stat st;
      const bool plain = !shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos;
      if (!plain || ::stat((dir + "/" + shard).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
        std::fprintf(stderr, "read_weight_index accepted shard \"%s\" for \"%s\": not a file in the folder\n",
                     shard.c_str(), tensor.c_str());
        __builtin_trap();
      }
    }
  } catch (const moepp::Error&) {
  }
  return 0;
}
