// OpenMP helpers. Kernels parallelise over rows (tokens) with parallel_for; GEMM providers
// thread internally, so callers do not open an OpenMP region around a GEMM (no nesting).
// The one exception is gemm_grouped under bf16 products, which runs one product a thread
// on purpose: inside the region the provider and the rounding run serially.
#pragma once
#include <omp.h>

#include <algorithm>
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
