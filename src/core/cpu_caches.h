// The per-core L2 cache the kernels size their blocks by, read once from the C library
// (sysconf, which asks the CPU). Blocking decisions that assumed one machine's 2 MB L2
// kept data the next machine's 1 MB L2 cannot hold (AMD Zen 5), so they ask here instead.
#pragma once
#include <cstdint>

namespace moepp {

struct L2Cache {
  int64_t bytes = 2 << 20;  // used where the library cannot tell (Intel Xeon's 2 MB, 16-way)
  int64_t ways = 16;
  int64_t sets() const { return bytes / 64 / ways; }
};

// Values outside [256 KB, 64 MB] or with no way count fall back to the defaults above.
const L2Cache& l2_cache();

}  // namespace moepp
