// MappedFile: a memory map of a whole file (weights are read in place, not copied, where
// the layout allows). Read-only, or copy-on-write: then the mapping may be written, and
// what is written stays in this process (pages copied as they are first written; the file
// never changes). Owns the mapping; movable, not copyable.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moepp {

enum class MapMode { read_only, copy_on_write };

class MappedFile {
 public:
  // Throws moepp::Error naming the file.
  explicit MappedFile(const std::string& path, MapMode mode = MapMode::read_only);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  // The same bytes, writable: a copy-on-write mapping only (throws otherwise).
  uint8_t* writable_data() const;
  MapMode mode() const { return mode_; }
  size_t size() const { return size_; }
  // Drops the whole pages inside [p, p + n) from this process's resident set
  // (madvise DONTNEED): a loader that has copied a tensor out of the mapping calls it so
  // that the file's pages do not add up while a model loads. A later read of the range
  // faults the pages in again from the file; the content never changes (in a copy-on-write
  // mapping it loses what was written there: release only ranges nobody writes).
  void release(const uint8_t* p, size_t n) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  MapMode mode_ = MapMode::read_only;
};

// The whole content of a regular file (FIFOs, devices and folders are refused without
// blocking); throws moepp::Error naming the file. `max_bytes` bounds what a caller
// expects (a config.json, an index): a larger file is refused before it is read.
std::string read_regular_file(const std::string& path, size_t max_bytes);

}  // namespace moepp
