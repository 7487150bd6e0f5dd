// UninitVector: a std::vector whose resize() leaves new elements default-initialised
// (for bytes and floats: untouched). A large weight buffer is then first written - and its
// pages first faulted in and zeroed by the kernel - by the code that fills it, on all
// threads, instead of by one thread's memset before the copy. Its storage starts on a cache
// line, as an AlignedVector's does.
#pragma once
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/aligned_vector.h"

namespace moepp {

// An allocator whose storage comes from Storage<T> (allocate, deallocate) and whose
// construct() default-initialises: for bytes and floats, leaves them untouched.
template <template <typename> class Storage, typename T>
struct DefaultInitOver : Storage<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitOver<Storage, U>;
  };
  DefaultInitOver() = default;
  template <typename U>
  DefaultInitOver(const DefaultInitOver<Storage, U>&) noexcept {}

  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using DefaultInitAllocator = DefaultInitOver<CacheLineAllocator, T>;

template <typename T>
using UninitVector = std::vector<T, DefaultInitAllocator<T>>;

}  // namespace moepp
