// OpenMP helpers. Kernels parallelise over rows (tokens) with parallel_for; GEMM providers
// thread internally, so callers do not open an OpenMP region around a GEMM (no nesting).
// The one exception is gemm_grouped under bf16 products, which runs one product a thread
// on purpose: inside the region the provider and the rounding run serially.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace moepp {

inline int max_threads() { return omp_get_max_threads(); }
inline void set_threads(int n) { omp_set_num_threads(n > 0 ? n : 1); }

// Ends the calling thread's idle OpenMP workers (its next parallel region starts new ones).
// For a thread whose parallel work is done while another thread's team goes on: libgomp
// counts every thread it manages, idle ones too, and once they outnumber the CPUs its
// waiting threads spin only ~1000 times before sleeping, so that every parallel region
// of the working team waits for a sleeping thread to be woken.
inline void release_idle_threads() { omp_pause_resource_all(omp_pause_hard); }

// Runs fn(i) for i in [0, n), split statically over the OpenMP threads. Small loops run
// inline: a parallel region costs microseconds.
template <typename Fn>
void parallel_for(int64_t n, Fn&& fn, int64_t min_parallel = 2) {
  if (n < min_parallel || omp_in_parallel() || omp_get_max_threads() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// parallel_for for tasks of unequal cost (a causal attention row's cost grows with its
// position): threads take the next `chunk` tasks as they finish, instead of fixed halves.
template <typename Fn>
void parallel_for_dynamic(int64_t n, Fn&& fn, int64_t chunk = 1) {
  if (n < 2 || omp_in_parallel() || omp_get_max_threads() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, chunk)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// parallel_for for tasks of equal cost whose time still varies by thread (a memory-bound
// stream: two cores draw unequal shares of the bandwidth from moment to moment). Each
// thread takes its own contiguous range from the front, as parallel_for would give it,
// so its reads stay one stream; a thread done with its range takes the last tasks of the
// others' ranges, one at a time, until none is left. Costs an uncontended atomic a task.
template <typename Fn>
void parallel_for_stealing(int64_t n, Fn&& fn) {
  const int T = omp_get_max_threads();
  if (n < 2 || omp_in_parallel() || T == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  if (n >= (int64_t(1) << 31)) return parallel_for(n, fn);  // a task index must fit a half word
  // A range's next task from the front (high half) and its end (low half), in one word.
  struct alignas(64) Range {
    std::atomic<uint64_t> front_end;
  };
  std::vector<Range> ranges(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    const uint64_t front = uint64_t(n * t / T), end = uint64_t(n * (t + 1) / T);
    ranges[size_t(t)].front_end.store((front << 32) | end, std::memory_order_relaxed);
  }
  // Takes a task from range r's front (its owner) or back (another thread); -1 when empty.
  const auto take = [&](Range& r, bool front) -> int64_t {
    uint64_t v = r.front_end.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t f = v >> 32, e = v & 0xffffffffu;
      if (f >= e) return -1;
      const uint64_t next = front ? (((f + 1) << 32) | e) : ((f << 32) | (e - 1));
      if (r.front_end.compare_exchange_weak(v, next, std::memory_order_relaxed)) return int64_t(front ? f : e - 1);
    }
  };
#pragma omp parallel
  {
    const int me = omp_get_thread_num();
    for (int64_t i; (i = take(ranges[size_t(me)], true)) >= 0;) fn(i);
    // Ranges of threads the team lacks (fewer threads than asked for) are taken from the back too.
    for (int k = 1; k < T; ++k) {
      Range& other = ranges[size_t((me + k) % T)];
      for (int64_t i; (i = take(other, false)) >= 0;) fn(i);
    }
  }
}

// memcpy in 1 MB pieces on all threads: into fresh memory (an UninitVector just resized)
// the threads also share the page faults and the kernel's zeroing of the new pages.
inline void parallel_copy(void* dst, const void* src, size_t bytes) {
  constexpr size_t kPiece = size_t(1) << 20;
  parallel_for(int64_t((bytes + kPiece - 1) / kPiece), [&](int64_t i) {
    const size_t at = size_t(i) * kPiece;
    std::memcpy(static_cast<char*>(dst) + at, static_cast<const char*>(src) + at, std::min(kPiece, bytes - at));
  });
}

// memset to zero of several blocks on all threads, in 256 KB pieces, in one parallel
// region for them all (a model's gradients: many tensors, a few large).
inline void parallel_zero(const std::vector<std::pair<void*, size_t>>& blocks) {
  constexpr size_t kPiece = size_t(1) << 18;
  std::vector<std::pair<char*, size_t>> pieces;
  for (const auto& [p, bytes] : blocks)
    for (size_t at = 0; at < bytes; at += kPiece)
      pieces.emplace_back(static_cast<char*>(p) + at, std::min(kPiece, bytes - at));
  parallel_for(int64_t(pieces.size()), [&](int64_t i) {
    std::memset(pieces[size_t(i)].first, 0, pieces[size_t(i)].second);
  });
}

}  // namespace moepp
