// Token shards (SPEC §3.4): a 32-byte header — magic "MOEPPTOK", u32 version (1), u32
// token byte width (2 or 4), u64 token count, 8 reserved bytes — then little-endian ids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moepp {

// Width 2 when every id fits in 16 bits, else 4. Written atomically.
void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens);

// Validates magic, version, width and that the count matches the file size.
std::vector<int32_t> read_token_shard(const std::string& path);

}  // namespace moepp
