#include "core/huge_page_arena.h"

#include <sys/mman.h>

#include <cstdint>
#include <map>
#include <mutex>

#include "core/error.h"

namespace moepp {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kChunk = size_t(64) << 20;
constexpr size_t kSmallest = size_t(64) << 10;  // smaller blocks come from operator new
constexpr std::align_val_t kAlign{64};
// Under AddressSanitizer every block comes from the heap, where a read past its end is
// caught; inside a chunk it would read the next block.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kHeapOnly = true;
#else
constexpr bool kHeapOnly = false;
#endif

struct Chunk {
  size_t size = 0;  // bytes mapped
  size_t used = 0;  // bytes handed out, from the start
  size_t live = 0;  // blocks not yet freed
};

struct Arena {
  std::mutex mutex;                // guards everything below
  std::map<char*, Chunk> chunks;   // by start address
  char* current = nullptr;         // the chunk new blocks are carved from
};

// Never destroyed: a static model may free its weights during static destruction.
Arena& arena() {
  static Arena* a = new Arena;
  return *a;
}

// `size` bytes (a multiple of 2 MB) starting on a 2 MB boundary: one huge page more is
// mapped, and the slack before and after the aligned start is unmapped again.
char* map_chunk(size_t size) {
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) fail("out of memory: cannot map ", size, " bytes for packed weights");
  char* const start = static_cast<char*>(raw);
  char* const base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(start) + kHugePage - 1) & ~(kHugePage - 1));
  if (base > start) munmap(start, size_t(base - start));
  char* const end = start + size + kHugePage;
  if (end > base + size) munmap(base + size, size_t(end - (base + size)));
#if defined(MADV_HUGEPAGE)
  madvise(base, size, MADV_HUGEPAGE);  // advice only: ignored where transparent huge pages are off
#endif
  return base;
}

}  // namespace

void* arena_allocate(size_t bytes) {
  if (kHeapOnly || bytes < kSmallest) return ::operator new(bytes, kAlign);
  MOEPP_CHECK(bytes <= (size_t(1) << 56), "cannot allocate ", bytes, " bytes (an implausible size)");
  const size_t need = (bytes + 63) / 64 * 64;
  Arena& a = arena();
  const std::lock_guard<std::mutex> lock(a.mutex);
  if (need >= kChunk / 2) {
    const size_t size = (need + kHugePage - 1) / kHugePage * kHugePage;
    char* const base = map_chunk(size);
    a.chunks.emplace(base, Chunk{size, size, 1});
    return base;
  }
  auto it = a.current ? a.chunks.find(a.current) : a.chunks.end();
  if (it == a.chunks.end() || it->second.used + need > it->second.size) {
    char* const base = map_chunk(kChunk);
    it = a.chunks.emplace(base, Chunk{kChunk, 0, 0}).first;
    a.current = base;
  }
  char* const p = it->first + it->second.used;
  it->second.used += need;
  it->second.live += 1;
  return p;
}

void arena_free(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (kHeapOnly || bytes < kSmallest) return ::operator delete(p, kAlign);
  Arena& a = arena();
  const std::lock_guard<std::mutex> lock(a.mutex);
  auto it = a.chunks.upper_bound(static_cast<char*>(p));
  if (it == a.chunks.begin()) return;  // not a block of ours: nothing to free
  --it;
  if (static_cast<char*>(p) >= it->first + it->second.size) return;
  if (--it->second.live > 0) return;
  if (a.current == it->first) a.current = nullptr;
  munmap(it->first, it->second.size);
  a.chunks.erase(it);
}

bool arena_uses_chunks() { return !kHeapOnly; }

size_t arena_chunks() {
  Arena& a = arena();
  const std::lock_guard<std::mutex> lock(a.mutex);
  return a.chunks.size();
}

}  // namespace moepp
