// safetensors files: an 8-byte little-endian header length, a JSON header mapping tensor
// names to {dtype, shape, data_offsets} (plus optional "__metadata__"), then the data.
// The reader maps the file and validates everything before it trusts it: header length
// against the file, dtypes, shape products against byte ranges, ranges inside the data and
// not overlapping. Tensor bytes stay in the mapping until read.
// The writer streams tensors into a temporary file and renames it, so a crash leaves no half
// file and a large model is never held twice; it starts every tensor whose size is a
// multiple of 64 bytes on a 64-byte boundary of the file (in_place_f32).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "io/digest.h"
#include "io/mapped_file.h"

namespace moepp {

// Resource limits (docs/robustness.md): a header past these is refused before it is parsed.
// (A header costs the JSON parser ~15x its size in memory.)
constexpr uint64_t kSafetensorsMaxHeaderBytes = uint64_t(4) << 20;
constexpr size_t kSafetensorsMaxEntries = size_t(1) << 16;
constexpr size_t kSafetensorsMaxMetadata = 4096;

struct SafetensorsEntry {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

class SafetensorsFile {
 public:
  // Reads and validates `path`; throws moepp::Error naming the file and the field.
  // copy_on_write maps it so that tensors can be used in place as writable memory
  // (in_place_f32).
  explicit SafetensorsFile(const std::string& path, MapMode mode = MapMode::read_only);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::string meta(const std::string& key) const;  // throws when absent

  // The tensor converted to T (f32, f64, bf16, f16, i64 and i32 sources).
  template <typename T>
  Tensor<T> read(const std::string& name) const;
  // The tensor's bytes as stored (entry(name).end - begin of them), inside the mapping.
  const uint8_t* raw(const std::string& name) const { return data_ + entry(name).begin; }
  // An F32 tensor's elements as writable memory inside a copy-on-write mapping (writes stay
  // in this process), where they start on a 64-byte boundary as a Tensor's storage does;
  // null for other dtypes, other alignments and read-only mappings.
  float* in_place_f32(const std::string& name) const;
  // Drops the tensor's pages from the resident set (MappedFile::release) once it is read.
  void release(const std::string& name) const;

 private:
  std::string path_;
  MappedFile file_;
  const uint8_t* data_ = nullptr;  // the data section, inside the mapping
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: its bytes in memory (data), or produced when the writer reaches it
// (fill writes them into a buffer of the tensor's size that the writer reuses), so a file
// of converted tensors never holds more than one of them besides the source.
struct SafetensorsWriteItem {
  SafetensorsWriteItem(std::string name, DType dtype, std::vector<int64_t> shape, const void* data)
      : name(std::move(name)), dtype(dtype), shape(std::move(shape)), data(data) {}
  SafetensorsWriteItem(std::string name, DType dtype, std::vector<int64_t> shape, std::function<void(void*)> fill)
      : name(std::move(name)), dtype(dtype), shape(std::move(shape)), fill(std::move(fill)) {}
  uint64_t bytes() const;

  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // shape-product elements of dtype
  std::function<void(void*)> fill;
};

// Streams the header and the tensors one by one into the file (through AtomicFileWriter):
// besides the items' own memory it holds the header and at most the largest filled tensor.
// Returns the file's size and digest, taken as it is written.
FileStamp write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                            const std::map<std::string, std::string>& metadata = {});

}  // namespace moepp
