#include "data/shards.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace moepp {

namespace {
constexpr char kMagic[8] = {'M', 'O', 'E', 'P', 'P', 'T', 'O', 'K'};
constexpr uint32_t kVersion = 1;

void put(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint64_t get(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
}  // namespace

void write_token_shard(const std::string& path, const std::vector<int32_t>& tokens) {
  uint32_t width = 2;
  for (int32_t t : tokens) {
    MOEPP_CHECK(t >= 0, path, ": negative token id ", t);
    if (t > 0xffff) width = 4;
  }
  std::string out(kMagic, 8);
  put(out, kVersion, 4);
  put(out, width, 4);
  put(out, tokens.size(), 8);
  put(out, 0, 8);
  out.reserve(32 + tokens.size() * width);
  for (int32_t t : tokens) put(out, uint64_t(t), int(width));
  write_file_atomic(path, out);
}

std::vector<int32_t> read_token_shard(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  MOEPP_CHECK(in, path, ": cannot open token shard");
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  MOEPP_CHECK(size >= 32, path, ": ", size, " bytes is too short for a token shard header");
  unsigned char h[32];
  in.read(reinterpret_cast<char*>(h), 32);
  MOEPP_CHECK(std::memcmp(h, kMagic, 8) == 0, path, ": bad magic (not a MOEPPTOK token shard)");
  const uint64_t version = get(h + 8, 4), width = get(h + 12, 4), count = get(h + 16, 8);
  MOEPP_CHECK(version == kVersion, path, ": unsupported version ", version);
  MOEPP_CHECK(width == 2 || width == 4, path, ": token width ", width, " (expected 2 or 4)");
  MOEPP_CHECK(count <= (size - 32) / width && 32 + count * width == size, path, ": header says ", count,
              " tokens of ", width, " bytes but the file holds ", size - 32, " bytes of tokens");
  std::vector<unsigned char> raw(static_cast<size_t>(count * width));
  in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size()));
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) tokens[size_t(i)] = int32_t(get(raw.data() + i * width, int(width)));
  return tokens;
}

}  // namespace moepp
