// WeightBuffer: the storage of a packed weight matrix - either its own memory (filled by
// packing, on 2 MB pages: core/huge_page_arena.h) or a read-only view into memory someone
// else keeps alive (a mapped model file whose bytes are already in the layout the kernels
// read). A borrowed buffer holds a shared_ptr to its keeper, so the mapping lives as long
// as any matrix viewing it, whoever outlives whom.
#pragma once
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/huge_page_arena.h"

namespace moepp {

template <typename T>
class WeightBuffer {
 public:
  // Owned storage of n elements (left uninitialised, as UninitVector does).
  void resize(size_t n) {
    keeper_.reset();
    borrowed_ = nullptr;
    borrowed_size_ = 0;
    owned_.resize(n);
  }
  // A view of n elements at p, valid while keeper lives; the owned storage is freed.
  void borrow(const T* p, size_t n, std::shared_ptr<const void> keeper) {
    HugePageVector<T>().swap(owned_);
    borrowed_ = p;
    borrowed_size_ = n;
    keeper_ = std::move(keeper);
  }
  bool borrowed() const { return keeper_ != nullptr; }

  const T* data() const { return keeper_ ? borrowed_ : owned_.data(); }
  // For filling owned storage (packing, copying); a borrowed view is read-only memory.
  T* mutable_data() {
    MOEPP_CHECK(!keeper_, "WeightBuffer: a borrowed (mapped) weight buffer is read-only");
    return owned_.data();
  }
  size_t size() const { return keeper_ ? borrowed_size_ : owned_.size(); }
  bool empty() const { return size() == 0; }
  const T& operator[](size_t i) const { return data()[i]; }
  // A copy of the elements (tests compare buffers with it).
  std::vector<T> values() const { return std::vector<T>(data(), data() + size()); }

 private:
  HugePageVector<T> owned_;
  const T* borrowed_ = nullptr;
  size_t borrowed_size_ = 0;
  std::shared_ptr<const void> keeper_;
};

}  // namespace moepp
