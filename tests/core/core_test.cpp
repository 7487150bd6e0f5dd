#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "core/uninit_vector.h"

using namespace moepp;

TEST(Rng, SameSeedSameSequenceOtherSeedOtherSequence) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    const uint64_t va = a.next_u64();
    EXPECT_EQ(va, b.next_u64());
    EXPECT_NE(va, c.next_u64());
  }
}

TEST(Rng, NormalHasUnitMomentsAndUniformIsInRange) {
  Rng r(7);
  const int n = 200000;
  double s = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const double v = r.normal();
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);       // 4.5 standard errors
  EXPECT_NEAR(s2 / n, 1.0, 0.015);
  for (int i = 0; i < 1000; ++i) {
    const double u = r.uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

TEST(Bf16, KnownBitPatternsAndRoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f).bits, 0xc000);
  EXPECT_EQ(bf16_to_f32(bf16{0x3f80}), 1.0f);
  // 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * 0x1p-8f)), 1.015625f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  // 8 significant bits: a round trip is off by at most half an ulp, 2^-8 relative
  Rng r(1);
  for (int i = 0; i < 1000; ++i) {
    const float v = float(r.normal() * 100);
    EXPECT_LE(std::fabs(bf16_to_f32(f32_to_bf16(v)) - v), std::fabs(v) * 0x1p-8f);
  }
}

TEST(F16, KnownValuesAndRoundTrip) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  for (uint32_t h = 0; h < 0x7c00; ++h) EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h);
}

// The array conversion (16 at a time in hardware where the CPU has AVX-512) gives the
// scalar conversion's bits: ties to even, subnormals, the edge of overflow, signs.
TEST(F16, ArrayConversionEqualsTheScalarOne) {
  std::vector<float> x = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e6f, 0x1p-24f, 0x1p-25f,
                          0x1.8p-25f, 0x1p-14f, 0x1.ffcp-15f, 1.0f + 0x1p-11f, 1.0f + 0x3p-11f, -(1.0f + 0x1p-11f),
                          INFINITY, -INFINITY, 3e-8f, 6.1e-5f};
  Rng r(2);
  for (int i = 0; i < 4000; ++i) x.push_back(float(r.normal()) * std::ldexp(1.0f, int(r.below(48)) - 30));
  std::vector<uint16_t> got(x.size());
  for (size_t start : {size_t(0), size_t(3)}) {  // and a start off the 16-element grid
    f32_to_f16(x.data() + start, int64_t(x.size() - start), got.data());
    for (size_t i = start; i < x.size(); ++i) EXPECT_EQ(got[i - start], f32_to_f16(x[i])) << x[i];
  }
}

TEST(Tensor, ZeroInitialisedAlignedAndFitReusesStorage) {
  Tensor<float> t({3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t[i], 0.0f);
  float* before = t.data();
  t.fit({2, 7});
  EXPECT_EQ(t.data(), before);
  EXPECT_EQ(t.shape(), (Shape{2, 7}));
  t.fit({4, 5});
  EXPECT_EQ(t.numel(), 20);
}

TEST(AlignedVector, StorageStartsOnACacheLineAtEverySizeAndAfterGrowth) {
  // Sizes on both sides of malloc's mmap threshold, whose blocks start 16 bytes past a page.
  for (size_t n : {1, 3, 17, 1000, 40000, 300000}) {
    AlignedVector<int8_t> bytes(n, 7);
    UninitVector<float> floats(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes.data()) % 64, 0u) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(floats.data()) % 64, 0u) << n;
    bytes.resize(3 * n + 5, 9);  // reallocates: the new block is aligned too, the values kept
    floats.resize(2 * n + 1);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes.data()) % 64, 0u) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(floats.data()) % 64, 0u) << n;
    EXPECT_EQ(bytes[n - 1], 7);
    EXPECT_EQ(bytes[3 * n + 4], 9);
  }
}

TEST(Tensor, BorrowedStorageIsUsedInPlaceAndItsKeeperLivesAsLongAsTheTensor) {
  alignas(64) static float block[32];
  for (int i = 0; i < 32; ++i) block[i] = float(i);
  auto keeper = std::make_shared<int>(7);
  std::weak_ptr<int> watch = keeper;
  Tensor<float> t;
  t.borrow({4, 8}, block, keeper);
  keeper.reset();
  EXPECT_TRUE(t.borrowed());
  EXPECT_EQ(t.data(), block);
  EXPECT_EQ(t[9], 9.0f);
  t[9] = -1.0f;  // writes reach the borrowed memory
  EXPECT_EQ(block[9], -1.0f);
  EXPECT_FALSE(watch.expired());
  Tensor<float> moved = std::move(t);  // the keeper travels with the storage
  EXPECT_FALSE(watch.expired());
  moved.resize({2, 2});  // own storage again, zeroed; the keeper is let go
  EXPECT_FALSE(moved.borrowed());
  EXPECT_NE(moved.data(), block);
  EXPECT_EQ(moved[3], 0.0f);
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(block[10], 10.0f);  // and the block was not freed or cleared
  EXPECT_THROW(moved.borrow({1}, block + 1, std::make_shared<int>(0)), Error);  // not 64-byte aligned
}

TEST(Error, CarriesItsContext) {
  try {
    MOEPP_CHECK(1 + 1 == 3, "field ", "top_k", " has value ", 7);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "field top_k has value 7");
  }
}

// parallel_for_stealing runs every task exactly once whatever the counts: a task that ran
// twice or never shows in the per-task counters.
TEST(ParallelForStealing, RunsEveryTaskExactlyOnce) {
  const int before = max_threads();
  for (int threads : {1, 2, 3, 7}) {
    set_threads(threads);  // more threads than CPUs too: then they interleave and steal
    for (int64_t n : {0, 1, 2, 3, 5, 16, 17, 176, 1000}) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
      // Uneven task costs, so that threads finish their own ranges at different times.
      parallel_for_stealing(n, [&](int64_t i) {
        volatile double sink = 0;
        for (int64_t k = 0; k < (i % 7) * 200; ++k) sink = sink + double(k);
        runs[size_t(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(runs[size_t(i)].load(), 1) << "task " << i << " of " << n << ", " << threads << " threads";
    }
  }
  set_threads(before);
}
