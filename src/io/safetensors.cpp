#include "io/safetensors.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/element_convert.h"

namespace moepp {

namespace {

using json = nlohmann::json;

const std::map<std::string, DType>& dtype_names() {
  static const std::map<std::string, DType> m = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16}, {"F16", DType::f16},
      {"I64", DType::i64}, {"I32", DType::i32}, {"U8", DType::u8}, {"I8", DType::i8}};
  return m;
}

std::string dtype_tag(DType t) {
  for (const auto& [name, d] : dtype_names())
    if (d == t) return name;
  fail("safetensors: dtype ", dtype_name(t), " cannot be written");
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path, MapMode mode) : path_(path), file_(path, mode) {
  const uint64_t file_size = file_.size();
  MOEPP_CHECK(file_size >= 8, path, ": file of ", file_size, " bytes is too short for a safetensors header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_.data()[i];
  MOEPP_CHECK(header_len <= file_size - 8, path, ": header length ", header_len,
              " runs past the end of the file (", file_size, " bytes)");
  MOEPP_CHECK(header_len <= kSafetensorsMaxHeaderBytes, path, ": header length ", header_len,
              " is larger than the ", kSafetensorsMaxHeaderBytes, " bytes moepp accepts");
  const std::string header(reinterpret_cast<const char*>(file_.data()) + 8, size_t(header_len));
  json j;
  try {
    j = json::parse(header);
  } catch (const json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  MOEPP_CHECK(j.is_object(), path, ": header is not a JSON object");
  MOEPP_CHECK(j.size() <= kSafetensorsMaxEntries, path, ": header lists ", j.size(), " tensors, more than the ",
              kSafetensorsMaxEntries, " moepp accepts");
  const uint64_t data_size = file_size - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      MOEPP_CHECK(v.is_object(), path, ": __metadata__ is not an object");
      MOEPP_CHECK(v.size() <= kSafetensorsMaxMetadata, path, ": __metadata__ holds ", v.size(),
                  " entries, more than the ", kSafetensorsMaxMetadata, " moepp accepts");
      for (auto m = v.begin(); m != v.end(); ++m) {
        MOEPP_CHECK(m.value().is_string(), path, ": __metadata__.", m.key(), " is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    MOEPP_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
                path, ": tensor ", name, " lacks dtype, shape or data_offsets");
    SafetensorsEntry e;
    MOEPP_CHECK(v["dtype"].is_string(), path, ": tensor ", name, ": dtype is not a string");
    const auto dt = dtype_names().find(v["dtype"].get<std::string>());
    MOEPP_CHECK(dt != dtype_names().end(), path, ": tensor ", name, ": unsupported dtype ", v["dtype"].dump());
    e.dtype = dt->second;
    MOEPP_CHECK(v["shape"].is_array(), path, ": tensor ", name, ": shape is not an array");
    uint64_t count = 1;
    MOEPP_CHECK(v["shape"].size() <= 8, path, ": tensor ", name, ": ", v["shape"].size(), " dimensions");
    for (const auto& d : v["shape"]) {
      MOEPP_CHECK(d.is_number_unsigned(), path, ": tensor ", name, ": shape entry ", d.dump(), " is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      MOEPP_CHECK(dim == 0 || count <= (uint64_t(1) << 48) / dim, path, ": tensor ", name, ": shape overflows");
      count *= dim;
      e.shape.push_back(int64_t(dim));
    }
    const json& off = v["data_offsets"];
    MOEPP_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                path, ": tensor ", name, ": data_offsets must be two non-negative integers");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    MOEPP_CHECK(e.begin <= e.end && e.end <= data_size, path, ": tensor ", name, ": data_offsets [",
                e.begin, ", ", e.end, "] run outside the data section of ", data_size, " bytes");
    MOEPP_CHECK(e.end - e.begin == count * dtype_size(e.dtype), path, ": tensor ", name, ": ",
                e.end - e.begin, " bytes for shape of ", count, " ", dtype_name(e.dtype), " elements");
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
    entries_[name] = std::move(e);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    MOEPP_CHECK(ranges[i].first >= ranges[i - 1].second, path, ": tensor data ranges overlap at byte ",
                ranges[i].first);
  data_ = file_.data() + 8 + header_len;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  MOEPP_CHECK(it != entries_.end(), path_, ": no tensor named ", name);
  return it->second;
}

float* SafetensorsFile::in_place_f32(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (file_.mode() != MapMode::copy_on_write || e.dtype != DType::f32 || e.end == e.begin) return nullptr;
  uint8_t* p = file_.writable_data() + (data_ - file_.data()) + e.begin;
  return reinterpret_cast<uintptr_t>(p) % 64 == 0 ? reinterpret_cast<float*>(p) : nullptr;
}

void SafetensorsFile::release(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  file_.release(data_ + e.begin, size_t(e.end - e.begin));
}

std::string SafetensorsFile::meta(const std::string& key) const {
  const auto it = metadata_.find(key);
  MOEPP_CHECK(it != metadata_.end(), path_, ": __metadata__ has no key ", key);
  return it->second;
}

template <typename T>
Tensor<T> SafetensorsFile::read(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  Tensor<T> t{Shape(e.shape)};
  convert_elements(data_ + e.begin, e.dtype, t.numel(), t.data());
  return t;
}

template Tensor<float> SafetensorsFile::read<float>(const std::string&) const;
template Tensor<double> SafetensorsFile::read<double>(const std::string&) const;
template Tensor<int64_t> SafetensorsFile::read<int64_t>(const std::string&) const;
template Tensor<int32_t> SafetensorsFile::read<int32_t>(const std::string&) const;

uint64_t SafetensorsWriteItem::bytes() const {
  uint64_t count = 1;
  for (auto d : shape) count *= uint64_t(d);
  return count * dtype_size(dtype);
}

FileStamp write_safetensors(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                            const std::map<std::string, std::string>& metadata) {
  // Tensors whose size is a multiple of 64 bytes come first and the header is padded so
  // that the data starts 64 bytes into the file: each of them then starts on a 64-byte
  // boundary, where a loader can use its f32 elements in place (in_place_f32). The rest
  // (small odd-sized ones) follow; the data stays without holes, as the format requires.
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < items.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(), [&](size_t i) { return items[i].bytes() % 64 == 0; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const size_t i : order) {
    const auto& it = items[i];
    MOEPP_CHECK(it.data || it.fill, path, ": tensor ", it.name, " has neither bytes nor a fill to write");
    const uint64_t bytes = it.bytes();
    header[it.name] = {{"dtype", dtype_tag(it.dtype)}, {"shape", it.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 64) h.push_back(' ');  // the format's padding: trailing spaces
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t((uint64_t(h.size()) >> (8 * i)) & 0xff);

  AtomicFileWriter out(path);
  DigestStream digest;
  auto put = [&](const void* data, size_t size) {
    out.append(data, size);
    digest.update(static_cast<const uint8_t*>(data), size);
  };
  put(length, sizeof length);
  put(h.data(), h.size());
  std::vector<uint8_t> filled;  // reused: the largest filled tensor at most
  for (const size_t i : order) {
    const auto& it = items[i];
    const size_t bytes = size_t(it.bytes());
    if (it.data) {
      put(it.data, bytes);
      continue;
    }
    filled.resize(bytes);
    it.fill(filled.data());
    put(filled.data(), bytes);
  }
  out.commit();
  return FileStamp{digest.size(), digest.finish()};
}

}  // namespace moepp
