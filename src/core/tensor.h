// Shapes and owning buffers.
//
// Tensor<T> owns a 64-byte aligned, zero-initialised block and its shape, or borrows a
// 64-byte aligned block that a keeper holds alive (a model file mapped copy-on-write,
// whose f32 tensors are used in place). Kernels take raw pointers; callers own the memory.
// Row-major throughout.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/checked.h"
#include "core/error.h"

namespace moepp {

struct Shape {
  std::vector<int64_t> dims;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims(d) {}
  explicit Shape(std::vector<int64_t> d) : dims(std::move(d)) {}

  int rank() const { return int(dims.size()); }
  int64_t operator[](int i) const { return dims.at(size_t(i)); }
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
  bool operator==(const Shape& o) const { return dims == o.dims; }
  bool operator!=(const Shape& o) const { return dims != o.dims; }
  std::string str() const;
};

// A tensor's storage: an aligned block from aligned_alloc, freed with the tensor, or (with a
// keeper) memory the keeper owns, which the tensor keeps alive and never frees itself.
struct TensorStorage {
  std::shared_ptr<const void> keeper;
  void operator()(void* p) const {
    if (!keeper) std::free(p);
  }
};

void* aligned_zeroed(size_t bytes);  // throws moepp::Error when out of memory

template <typename T>
class Tensor {
 public:
  Tensor() : shape_{0} {}  // empty: numel() == 0
  explicit Tensor(Shape shape) { resize(std::move(shape)); }

  void resize(Shape shape) {
    // Shapes can come from files: a product that wraps would allocate a small block for a
    // huge tensor, so the count and the byte size are both checked.
    const int64_t n = checked_numel(shape.dims, "tensor size");
    const uint64_t bytes = checked_mul(uint64_t(n), uint64_t(sizeof(T)), "tensor size in bytes");
    shape_ = std::move(shape);
    // A fresh deleter: a borrowed block's keeper must not claim the new allocation.
    data_ = Storage(n ? static_cast<T*>(aligned_zeroed(size_t(bytes))) : nullptr, TensorStorage{});
    capacity_ = n;
  }
  // Uses shape-product elements at p in place, valid while keeper lives (the tensor holds
  // it): writes go to that memory. p must be 64-byte aligned like an owned block.
  void borrow(Shape shape, T* p, std::shared_ptr<const void> keeper) {
    MOEPP_CHECK(keeper && p && reinterpret_cast<uintptr_t>(p) % 64 == 0,
                "Tensor::borrow needs a keeper and a 64-byte aligned block");
    const int64_t n = checked_numel(shape.dims, "tensor size");
    shape_ = std::move(shape);
    data_ = Storage(p, TensorStorage{std::move(keeper)});
    capacity_ = n;
  }
  bool borrowed() const { return data_ && data_.get_deleter().keeper != nullptr; }
  // A shape without storage (numel() reports the shape; data() is null) for code that
  // walks a model's tensors before filling them one at a time: resize before use.
  void declare(Shape shape) {
    shape_ = std::move(shape);
    data_ = Storage(nullptr, TensorStorage{});
    capacity_ = 0;
  }
  bool allocated() const { return data_ != nullptr || shape_.numel() == 0; }
  // resize(shape) or declare(shape).
  void shape_as(Shape shape, bool allocate) { allocate ? resize(std::move(shape)) : declare(std::move(shape)); }
  void zero() {
    if (data_) std::memset(data_.get(), 0, size_t(numel()) * sizeof(T));
  }
  // Gives the tensor `shape`, reusing the storage when it is large enough (scratch buffers
  // whose row count changes every batch). Contents are unspecified afterwards.
  void fit(Shape shape) {
    const int64_t n = shape.numel();
    if (n > capacity_) {
      resize(std::move(shape));
      return;
    }
    shape_ = std::move(shape);
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  T& operator[](int64_t i) { return data_.get()[i]; }
  const T& operator[](int64_t i) const { return data_.get()[i]; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  int64_t dim(int i) const { return shape_[i]; }

  Tensor clone() const {
    Tensor t(shape_);
    if (numel()) std::memcpy(t.data(), data(), size_t(numel()) * sizeof(T));
    return t;
  }

 private:
  Shape shape_;
  int64_t capacity_ = 0;
  using Storage = std::unique_ptr<T, TensorStorage>;
  Storage data_;
};

}  // namespace moepp
