#include "kernels/product_clock.h"

#include <omp.h>

#include <atomic>

#include "core/error.h"

namespace moepp {

namespace {
std::atomic<bool> g_on{false};
std::atomic<int64_t> g_nanoseconds{0};
thread_local int t_depth = 0;  // products open on this thread (gemm_grouped calls gemm)
}  // namespace

ProductClock::ProductClock() {
  MOEPP_CHECK(!g_on.exchange(true), "ProductClock: one is already counting");
  g_nanoseconds.store(0);
}

ProductClock::~ProductClock() { g_on.store(false); }

double ProductClock::seconds() const { return double(g_nanoseconds.load()) * 1e-9; }

ProductTiming::ProductTiming() {
  if (!g_on.load(std::memory_order_relaxed)) return;
  if (t_depth++ == 0 && !omp_in_parallel()) {
    counting_ = true;
    start_ = std::chrono::steady_clock::now();
  }
  nested_ = true;
}

ProductTiming::~ProductTiming() {
  if (nested_) --t_depth;
  if (!counting_) return;
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_);
  g_nanoseconds.fetch_add(ns.count(), std::memory_order_relaxed);
}

}  // namespace moepp
