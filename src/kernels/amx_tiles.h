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

}  // namespace moepp
