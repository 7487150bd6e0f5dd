// MappedFile: a read-only memory map of a whole file (weights are read in place, not
// copied, where the layout allows). Owns the mapping; movable, not copyable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moepp {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws moepp::Error naming the file
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Drops the whole pages inside [p, p + n) from this process's resident set
  // (madvise DONTNEED): a loader that has copied a tensor out of the mapping calls it so
  // that the file's pages do not add up while a model loads. A later read of the range
  // faults the pages in again from the file; the content never changes.
  void release(const uint8_t* p, size_t n) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The whole content of a regular file (FIFOs, devices and folders are refused without
// blocking); throws moepp::Error naming the file. `max_bytes` bounds what a caller
// expects (a config.json, an index): a larger file is refused before it is read.
std::string read_regular_file(const std::string& path, size_t max_bytes);

}  // namespace moepp
