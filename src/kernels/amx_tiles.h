// What AMX kernels (kernels/amx_int8.h) need besides the tile instructions: the process's
// permission to use the tile registers, and the 64-byte tile configuration.
#pragma once
#include <cstdint>

namespace moepp {

// Whether Linux granted this process the tile registers' state (8 KB a thread; it hands it
// out only to a process that asks). Asked once, on the first call; false where the build
// has no AMX.
bool amx_tiles_granted();

// The tile configuration of palette 1: rows and bytes per row of each of the 8 tiles. A
// kernel loads its own on every call, as other code on the thread (oneDNN) loads others.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

#if defined(__AMX_TILE__)
// Loads c as the tile configuration. (Not _tile_loadconfig: GCC 12's names only the first
// 8 bytes of the configuration as read, so the compiler may drop the stores of the rows and
// bytes per row as dead, and the next tile load faults or uses other shapes. A scratch
// benchmark built on it died with SIGILL in its first tile load.)
inline void load_tile_config(const TileConfig& c) { asm volatile("ldtilecfg %0" : : "m"(c)); }
#endif

}  // namespace moepp
