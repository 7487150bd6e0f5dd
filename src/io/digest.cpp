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

constexpr size_t kChunk = size_t(1) << 20;

uint64_t chunk_digest(const uint8_t* data, size_t size, uint64_t index) {
  // Four independent lanes: one multiply chain would bound the pass at ~2 GB/s.
  uint64_t h[4] = {0xcbf29ce484222325ull ^ index, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull,
                   0xc2b2ae3d27d4eb4full};
  size_t i = 0;
  for (; i + 32 <= size; i += 32)
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, data + i + 8 * size_t(l), 8);
      h[l] = mix(h[l], w);
    }
  for (; i < size; ++i) h[0] = mix(h[0], data[i]);
  return mix(mix(mix(h[0], h[1]), h[2]), h[3]);
}

// Appends the digests of data's chunks, numbered from digests.size(), on all threads.
void append_chunk_digests(const uint8_t* data, size_t size, std::vector<uint64_t>& digests) {
  const int64_t chunks = int64_t((size + kChunk - 1) / kChunk);
  const size_t first = digests.size();
  digests.resize(first + size_t(chunks));
  parallel_for(chunks, [&](int64_t c) {
    const size_t begin = size_t(c) * kChunk, end = std::min(size, begin + kChunk);
    digests[first + size_t(c)] = chunk_digest(data + begin, end - begin, uint64_t(first) + uint64_t(c));
  });
}

uint64_t combine(const std::vector<uint64_t>& chunk_digests, uint64_t size) {
  uint64_t h = 0xcbf29ce484222325ull ^ size;
  for (const uint64_t d : chunk_digests) h = mix(h, d);
  return h;
}

}  // namespace

uint64_t digest_bytes(const uint8_t* data, size_t size) {
  std::vector<uint64_t> chunk_digests;
  append_chunk_digests(data, size, chunk_digests);
  return combine(chunk_digests, size);
}

void DigestStream::update(const uint8_t* data, size_t size) {
  size_ += size;
  if (!pending_.empty()) {
    const size_t take = std::min(size, kChunk - pending_.size());
    pending_.insert(pending_.end(), data, data + take);
    data += take;
    size -= take;
    if (pending_.size() < kChunk) return;
    chunk_digests_.push_back(chunk_digest(pending_.data(), kChunk, chunk_digests_.size()));
    pending_.clear();
  }
  const size_t whole = size / kChunk * kChunk;
  append_chunk_digests(data, whole, chunk_digests_);
  pending_.assign(data + whole, data + size);
}

uint64_t DigestStream::finish() const {
  std::vector<uint64_t> all = chunk_digests_;
  if (!pending_.empty()) all.push_back(chunk_digest(pending_.data(), pending_.size(), all.size()));
  return combine(all, size_);
}

FileStamp file_stamp(const std::string& path) {
  const MappedFile f(path);
  return FileStamp{f.size(), digest_bytes(f.data(), f.size())};
}

}  // namespace moepp
