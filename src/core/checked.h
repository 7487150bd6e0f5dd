// Overflow-checked size arithmetic for every number that comes from a file or a command
// line (shapes, strides, offsets, byte counts). Each helper either returns the exact result
// or throws moepp::Error naming `what` and the operands, so a reader's bounds check can
// never be fooled by a product or sum that wraps.
#pragma once
#include <cstdint>
#include <vector>

#include "core/error.h"

namespace moepp {

inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(what, ": ", a, " + ", b, " overflows 64 bits");
  return r;
}

inline uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(what, ": ", a, " * ", b, " overflows 64 bits");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(what, ": ", a, " + ", b, " overflows int64");
  return r;
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(what, ": ", a, " * ", b, " overflows int64");
  return r;
}

// The element count of a shape; refuses negative dimensions and products past int64.
inline int64_t checked_numel(const std::vector<int64_t>& dims, const char* what) {
  int64_t n = 1;
  for (const int64_t d : dims) {
    if (d < 0) fail(what, ": negative dimension ", d);
    n = checked_mul(n, d, what);
  }
  return n;
}

// True when [offset, offset + len) lies inside [0, size), without wrapping.
inline bool range_within(uint64_t offset, uint64_t len, uint64_t size) { return offset <= size && len <= size - offset; }

}  // namespace moepp
