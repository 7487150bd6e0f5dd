#include "core/tensor.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace moepp {

std::string Shape::str() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << "]";
  return os.str();
}

void* aligned_zeroed(size_t bytes) {
  // Blocks of several MB (weights, activations of a batch) sit on 2 MB pages where the
  // kernel allows it: GEMMs that stream a 50 MB weight matrix then miss the TLB 512x less.
  constexpr size_t kHugePage = size_t(2) << 20;
  const bool huge = bytes >= 2 * kHugePage;
  const size_t align = huge ? kHugePage : 64;
  MOEPP_CHECK(bytes <= (size_t(1) << 56), "cannot allocate ", bytes, " bytes (an implausible size)");
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
#if defined(MADV_HUGEPAGE)
  if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: ignored where unsupported
#endif
  std::memset(p, 0, rounded);
  return p;
}

}  // namespace moepp
