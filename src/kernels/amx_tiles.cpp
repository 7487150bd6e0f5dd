#include "kernels/amx_tiles.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace moepp {

bool amx_tiles_granted() {
#if defined(__AMX_TILE__)
  static const bool granted = [] {
    constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return granted;
#else
  return false;
#endif
}

}  // namespace moepp
