#include "io/digest.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/parallel.h"
#include "io/mapped_file.h"

namespace moepp {

namespace {

uint64_t mix(uint64_t h, uint64_t w) {
  h ^= w;
  h *= 0x100000001b3ull;
  return h ^ (h >> 29);
}

}  // namespace

uint64_t digest_bytes(const uint8_t* data, size_t size) {
  constexpr size_t kChunk = size_t(1) << 20;
  const int64_t chunks = int64_t((size + kChunk - 1) / kChunk);
  std::vector<uint64_t> part(size_t(chunks), 0);
  parallel_for(chunks, [&](int64_t c) {
    const size_t begin = size_t(c) * kChunk, end = std::min(size, begin + kChunk);
    // Four independent lanes: one multiply chain would bound the pass at ~2 GB/s.
    uint64_t h[4] = {0xcbf29ce484222325ull ^ uint64_t(c), 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull,
                     0xc2b2ae3d27d4eb4full};
    size_t i = begin;
    for (; i + 32 <= end; i += 32)
      for (int l = 0; l < 4; ++l) {
        uint64_t w;
        std::memcpy(&w, data + i + 8 * size_t(l), 8);
        h[l] = mix(h[l], w);
      }
    for (; i < end; ++i) h[0] = mix(h[0], data[i]);
    part[size_t(c)] = mix(mix(mix(h[0], h[1]), h[2]), h[3]);
  });
  uint64_t h = 0xcbf29ce484222325ull ^ uint64_t(size);
  for (const uint64_t p : part) h = mix(h, p);
  return h;
}

FileStamp file_stamp(const std::string& path) {
  const MappedFile f(path);
  return FileStamp{f.size(), digest_bytes(f.data(), f.size())};
}

}  // namespace moepp
