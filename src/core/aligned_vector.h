// AlignedVector: a std::vector whose storage starts on a cache line (64 bytes). Vector
// kernels read their operands 64 bytes at a time; from a std::vector's 16-byte aligned
// block every such load straddles two lines and costs two (the few-row int8 kernel read
// its activations that way and ran 1.2-1.4x slower at 2-8 rows).
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace moepp {

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};

  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}

  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kAlign); }

  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
};

template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace moepp
