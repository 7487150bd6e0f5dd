// Digests for checkpoint manifests: a 64-bit hash of a file's bytes, fast enough to take
// over gigabytes at every checkpoint (four independent multiply chains per 1 MB chunk,
// chunks on all threads, chunk digests combined in order). Not cryptographic: it detects
// a wrong, truncated or mixed-in file, not a forged one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moepp {

uint64_t digest_bytes(const uint8_t* data, size_t size);

// What a manifest records of a file: its size and the digest of its bytes.
struct FileStamp {
  uint64_t bytes = 0, digest = 0;
};
FileStamp file_stamp(const std::string& path);  // maps the file (regular files only)

}  // namespace moepp
