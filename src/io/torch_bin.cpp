#include "io/torch_bin.h"


#include "core/checked.h"
#include "core/error.h"
#include "core/parallel.h"
#include "io/element_convert.h"
#include "io/json_file.h"

namespace moepp {

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
  // Row-major strides (what torch.save writes for a tensor of its own) convert in one
  // run; any other view converts row by row along its last dimension.
  bool contiguous = true;
  for (int64_t d = rank - 1, expect = 1; d >= 0; --d) {
    if (r.shape[size_t(d)] != 1 && r.stride[size_t(d)] != expect) contiguous = false;
    expect *= r.shape[size_t(d)];
  }
  if (contiguous || rank == 0) {
    convert_elements(base + size_t(r.offset) * es, r.dtype, t.numel(), t.data());
  } else {
    const int64_t cols = r.shape[size_t(rank - 1)], col_stride = r.stride[size_t(rank - 1)];
    const int64_t rows = cols ? t.numel() / cols : 0;
    parallel_for(rows, [&](int64_t row) {
      int64_t off = r.offset;
      for (int64_t d = rank - 2, rest = row; d >= 0; --d) {
        off += (rest % r.shape[size_t(d)]) * r.stride[size_t(d)];
        rest /= r.shape[size_t(d)];
      }
      float* out = t.data() + row * cols;
      for (int64_t c = 0; c < cols; ++c)
        convert_elements(base + size_t(off + c * col_stride) * es, r.dtype, 1, out + c);
    });
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
