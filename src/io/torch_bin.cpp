#include "io/torch_bin.h"

#include <cstring>

#include "core/checked.h"
#include "core/error.h"
#include "io/json_file.h"

namespace moepp {

namespace {

float load_as_f32(const uint8_t* p, DType t) {
  switch (t) {
    case DType::f32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::f64: { double v; std::memcpy(&v, p, 8); return float(v); }
    case DType::bf16: { bf16 v; std::memcpy(&v.bits, p, 2); return bf16_to_f32(v); }
    case DType::f16: { uint16_t v; std::memcpy(&v, p, 2); return f16_to_f32(v); }
    case DType::i64: { int64_t v; std::memcpy(&v, p, 8); return float(v); }
    case DType::i32: { int32_t v; std::memcpy(&v, p, 4); return float(v); }
    case DType::u8: return float(*p);
    case DType::i8: return float(int8_t(*p));
  }
  return 0;
}

}  // namespace

TorchBinFile::TorchBinFile(const std::string& path) : zip_(path) {
  for (const auto& [name, e] : zip_.entries()) {
    const size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") prefix_ = name.substr(0, slash + 1);
  }
  MOEPP_CHECK(!prefix_.empty() || zip_.has("data.pkl"), path, ": no data.pkl in the archive (not a torch.save file)");
  const ZipEntry pkl = zip_.entry(prefix_ + "data.pkl");
  refs_ = parse_state_dict_pickle(pkl.data, size_t(pkl.size), path);
  for (size_t i = 0; i < refs_.size(); ++i) {
    const TorchTensorRef& r = refs_[i];
    const std::string storage = prefix_ + "data/" + r.storage_key;
    MOEPP_CHECK(zip_.has(storage), path, ": tensor ", r.name, " refers to storage ", r.storage_key, ", which is missing");
    const uint64_t have = zip_.entry(storage).size / dtype_size(r.dtype);
    MOEPP_CHECK(uint64_t(r.storage_numel) <= have, path, ": storage ", r.storage_key, " holds ", have, " ",
                dtype_name(r.dtype), " elements but the pickle says ", r.storage_numel);
    // Extent of the view: offset + sum (size_i - 1) * stride_i must lie in the storage. Every
    // step is overflow-checked: a stride near 2^63 must not wrap back into range.
    MOEPP_CHECK(r.offset >= 0, path, ": tensor ", r.name, " has a negative storage offset ", r.offset);
    int64_t last = r.offset;
    for (size_t d = 0; d < r.shape.size(); ++d)
      MOEPP_CHECK(r.shape[d] >= 0 && r.stride[d] >= 0, path, ": tensor ", r.name, " has a negative size or stride");
    const int64_t count = checked_numel(r.shape, (path + ": tensor " + r.name + " size").c_str());
    if (count > 0)
      for (size_t d = 0; d < r.shape.size(); ++d) {
        const std::string what = path + ": tensor " + r.name + " extent";
        last = checked_add(last, checked_mul(r.shape[d] - 1, r.stride[d], what.c_str()), what.c_str());
      }
    MOEPP_CHECK(count == 0 || uint64_t(last) < have, path, ": tensor ", r.name, " ",
                Shape(r.shape).str(), " at offset ", r.offset, " reaches element ", last, " of storage ", r.storage_key,
                ", which holds ", have, " (storage shorter than its tensor)");
    MOEPP_CHECK(index_.emplace(r.name, i).second, path, ": the state dict holds tensor ", r.name, " twice");
  }
}

const TorchTensorRef& TorchBinFile::ref(const std::string& name) const {
  const auto it = index_.find(name);
  MOEPP_CHECK(it != index_.end(), path(), ": no tensor named ", name);
  return refs_[it->second];
}

Tensor<float> TorchBinFile::read_f32(const std::string& name) const {
  const TorchTensorRef& r = ref(name);
  const uint8_t* base = zip_.entry(prefix_ + "data/" + r.storage_key).data;
  const size_t es = dtype_size(r.dtype);
  Tensor<float> t{Shape(r.shape)};
  const int rank = int(r.shape.size());
  std::vector<int64_t> idx(size_t(rank), 0);
  for (int64_t i = 0; i < t.numel(); ++i) {
    int64_t off = r.offset;
    for (int d = 0; d < rank; ++d) off += idx[size_t(d)] * r.stride[size_t(d)];
    t[i] = load_as_f32(base + size_t(off) * es, r.dtype);
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < r.shape[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  // The view's span of its storage leaves the resident set (checked against the storage
  // when the file was opened; another view of it faults its pages in again if read).
  if (t.numel() > 0) {
    int64_t last = r.offset;
    for (int d = 0; d < rank; ++d) last += (r.shape[size_t(d)] - 1) * r.stride[size_t(d)];
    zip_.release(base + size_t(r.offset) * es, size_t(last - r.offset + 1) * es);
  }
  return t;
}

TorchBinShards::TorchBinShards(const std::string& dir)
    : dir_(dir), where_(read_weight_index(dir, "pytorch_model.bin.index.json")) {}

TorchBinFile& TorchBinShards::shard_of(const std::string& name) {
  const auto it = where_.find(name);
  MOEPP_CHECK(it != where_.end(), dir_, "/pytorch_model.bin.index.json: no tensor named ", name);
  auto& f = open_[it->second];
  if (!f) f = std::make_unique<TorchBinFile>(dir_ + "/" + it->second);
  MOEPP_CHECK(f->has(name), f->path(), ": the index places ", name, " in this shard, but it is not there");
  return *f;
}

Tensor<float> TorchBinShards::read_f32(const std::string& name) { return shard_of(name).read_f32(name); }

std::vector<int64_t> TorchBinShards::shape(const std::string& name) { return shard_of(name).ref(name).shape; }

std::vector<std::string> TorchBinShards::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : where_) n.push_back(k);
  return n;
}

}  // namespace moepp
