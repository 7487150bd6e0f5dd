// HugePageArena: storage for large, long-lived buffers (the packed weight matrices) on 2 MB
// pages. A q4 expert of Mixtral's FFN shape is 1.4 MB and a q8_0 one 2.9 MB: on its own
// each would sit on 4 KB pages, where the few-row kernels streaming it from memory ran at
// 0.67-0.77x the rate they reach on 2 MB pages (docs/results/decode.md, "Packed weights on
// 2 MB pages"). So blocks of 64 KB and more are carved one after another from chunks of
// 64 MB, mapped 2 MB-aligned and advised for transparent huge pages; a block of half a
// chunk or more gets a chunk of its own. A chunk goes back to the system when its last
// block is freed. Smaller blocks come from operator new, 64-byte aligned, and so does every
// block in a build with AddressSanitizer (which checks heap blocks). Thread-safe.
#pragma once
#include <cstddef>
#include <vector>

#include "core/uninit_vector.h"

namespace moepp {

// 64-byte aligned storage for `bytes` bytes, uninitialised; throws moepp::Error when the
// system has no memory for it.
void* arena_allocate(size_t bytes);
// Frees a block arena_allocate returned for the same byte count.
void arena_free(void* p, size_t bytes) noexcept;
// Whether large blocks come from chunks (false under AddressSanitizer), and the chunks held
// now (tests).
bool arena_uses_chunks();
size_t arena_chunks();

// The arena as an allocator's storage.
template <typename T>
struct HugePageStorage {
  using value_type = T;
  HugePageStorage() = default;
  template <typename U>
  HugePageStorage(const HugePageStorage<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(arena_allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { arena_free(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const HugePageStorage<U>&) const noexcept {
    return true;
  }
};

// Over the arena, leaving bytes and floats uninitialised (as UninitVector does): the code
// that packs a matrix first touches its pages.
template <typename T>
using HugePageAllocator = DefaultInitOver<HugePageStorage, T>;

template <typename T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace moepp
