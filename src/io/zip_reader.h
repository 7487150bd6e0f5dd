// ZipReader: the entries of a zip archive whose members are stored uncompressed, as
// torch.save writes them (zip64 included, for shards over 4 GB). Every offset and size
// from the central directory and the local headers is checked against the file before
// an entry is handed out as a pointer into the mapping.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "io/mapped_file.h"

namespace moepp {

struct ZipEntry {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

class ZipReader {
 public:
  explicit ZipReader(const std::string& path);  // throws moepp::Error naming file and field

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  ZipEntry entry(const std::string& name) const;  // throws when absent
  // Drops [p, p + n) of a stored entry from the resident set once read (MappedFile::release).
  void release(const uint8_t* p, size_t n) const { file_.release(p, n); }
  const std::map<std::string, ZipEntry>& entries() const { return entries_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, ZipEntry> entries_;
};

}  // namespace moepp
