#include "core/cpu_caches.h"

#include <unistd.h>

namespace moepp {

const L2Cache& l2_cache() {
  static const L2Cache cache = [] {
    L2Cache c;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL2_CACHE_ASSOC)
    const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE), ways = sysconf(_SC_LEVEL2_CACHE_ASSOC);
    if (bytes >= (256L << 10) && bytes <= (64L << 20) && ways > 0 && bytes % (64 * ways) == 0) {
      c.bytes = bytes;
      c.ways = ways;
    }
#endif
    return c;
  }();
  return cache;
}

}  // namespace moepp
