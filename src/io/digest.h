// Digests for checkpoint manifests: a 64-bit hash of a file's bytes, fast enough to take
// over gigabytes at every checkpoint (four independent multiply chains per 1 MB chunk,
// chunks on all threads, chunk digests combined in order). Not cryptographic: it detects
// a wrong, truncated or mixed-in file, not a forged one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moepp {

uint64_t digest_bytes(const uint8_t* data, size_t size);

// digest_bytes of bytes that arrive in pieces of any size (a file as it is written): the
// same value as over the whole, holding at most one chunk (1 MB) of them.
class DigestStream {
 public:
  void update(const uint8_t* data, size_t size);
  uint64_t finish() const;  // of everything given so far
  uint64_t size() const { return size_; }

 private:
  std::vector<uint64_t> chunk_digests_;
  std::vector<uint8_t> pending_;  // the start of a chunk not yet complete
  uint64_t size_ = 0;
};

// What a manifest records of a file: its size and the digest of its bytes.
struct FileStamp {
  uint64_t bytes = 0, digest = 0;
};
FileStamp file_stamp(const std::string& path);  // maps the file (regular files only)

}  // namespace moepp
