// The arena for packed weights (core/huge_page_arena.h): blocks carved one after another
// from 2 MB-aligned chunks, a large block on a chunk of its own, chunks given back when
// their last block is freed, and small blocks from the heap.
#include "core/huge_page_arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

using namespace moepp;

namespace {

constexpr size_t kMB = size_t(1) << 20;

uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

}  // namespace

TEST(HugePageArena, CarvesBlocksInOrderFromAlignedChunksAndGivesThemBack) {
  if (!arena_uses_chunks()) GTEST_SKIP() << "AddressSanitizer build: every block comes from the heap";
  // In a process of its own (as ctest runs each test) no block is alive yet, so the first
  // block starts a chunk.
  ASSERT_EQ(arena_chunks(), 0u) << "another test's packed weights are still alive in this process";
  void* a = arena_allocate(31 * kMB);
  void* b = arena_allocate(kMB + 1);  // rounded up to 64 bytes
  void* c = arena_allocate(100000);
  EXPECT_EQ(arena_chunks(), 1u);
  EXPECT_EQ(address(a) % (2 * kMB), 0u);
  EXPECT_EQ(address(b), address(a) + 31 * kMB);
  EXPECT_EQ(address(c), address(b) + kMB + 64);
  void* d = arena_allocate(32 * kMB - 100000);  // does not fit what is left: a second chunk
  EXPECT_EQ(arena_chunks(), 2u);
  EXPECT_EQ(address(d) % (2 * kMB), 0u);
  std::memset(a, 1, 31 * kMB);  // every block is writable, and they do not overlap
  std::memset(b, 2, kMB + 1);
  std::memset(c, 3, 100000);
  EXPECT_EQ(static_cast<unsigned char*>(a)[31 * kMB - 1], 1);
  EXPECT_EQ(static_cast<unsigned char*>(b)[kMB], 2);
  arena_free(a, 31 * kMB);
  arena_free(b, kMB + 1);
  EXPECT_EQ(arena_chunks(), 2u);  // c still lives in the first chunk
  arena_free(c, 100000);
  EXPECT_EQ(arena_chunks(), 1u);
  arena_free(d, 32 * kMB - 100000);
  EXPECT_EQ(arena_chunks(), 0u);
}

TEST(HugePageArena, LargeBlocksGetAChunkOfTheirOwnOnA2MBBoundary) {
  if (!arena_uses_chunks()) GTEST_SKIP() << "AddressSanitizer build: every block comes from the heap";
  const size_t before = arena_chunks();
  void* big = arena_allocate(40 * kMB + 5);
  EXPECT_EQ(arena_chunks(), before + 1);
  EXPECT_EQ(address(big) % (2 * kMB), 0u);
  static_cast<char*>(big)[40 * kMB + 4] = 7;  // the last byte asked for is mapped
  arena_free(big, 40 * kMB + 5);
  EXPECT_EQ(arena_chunks(), before);
}

TEST(HugePageArena, SmallBlocksComeFromTheHeapAlignedToALine) {
  const size_t before = arena_chunks();
  void* p = arena_allocate(1000);
  EXPECT_EQ(address(p) % 64, 0u);
  EXPECT_EQ(arena_chunks(), before);
  arena_free(p, 1000);
}

TEST(HugePageArena, AVectorOverItKeepsItsElements) {
  HugePageVector<uint16_t> v;
  for (int i = 0; i < 100000; ++i) v.push_back(uint16_t(i));  // grows through heap and arena blocks
  for (int i = 0; i < 100000; i += 997) ASSERT_EQ(v[size_t(i)], uint16_t(i));
  EXPECT_EQ(address(v.data()) % 64, 0u);
}
