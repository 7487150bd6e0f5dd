// Helpers for the file-reading fuzz targets: the readers take paths, so each input is
// written to a file in a per-process folder under /dev/shm (memory, no disk wear).
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace moepp::fuzz {

// A folder of this process's own: /dev/shm/moepp-fuzz-<name>-<pid> (/tmp without /dev/shm),
// removed when the process exits normally (a crash leaves it, with the input in it).
inline const std::string& scratch_dir(const char* name) {
  static const std::string dir = [name] {
    const std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string d = base + "/moepp-fuzz-" + name + "-" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)cleanup;
  return dir;
}

// Writes bytes to path (replacing it); aborts when it cannot, which is the harness's fault.
inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

}  // namespace moepp::fuzz
