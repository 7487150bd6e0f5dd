#include "io/zip_reader.h"

#include "core/checked.h"
#include "core/error.h"

namespace moepp {

namespace {

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

constexpr uint32_t kEocd = 0x06054b50, kEocd64 = 0x06064b50, kEocd64Locator = 0x07064b50;
constexpr uint32_t kCentral = 0x02014b50, kLocal = 0x04034b50;

}  // namespace

ZipReader::ZipReader(const std::string& path) : file_(path) {
  const uint8_t* d = file_.data();
  const uint64_t n = file_.size();
  MOEPP_CHECK(n >= 22, path, ": ", n, " bytes is too short for a zip archive (truncated?)");
  // The end-of-central-directory record: last 22 bytes plus up to 64 KB of comment.
  int64_t eocd = -1;
  for (int64_t i = int64_t(n) - 22; i >= 0 && i >= int64_t(n) - 22 - 65535; --i)
    if (le(d + i, 4) == kEocd) {
      eocd = i;
      break;
    }
  MOEPP_CHECK(eocd >= 0, path, ": no zip end-of-central-directory record (truncated or not a zip archive)");
  uint64_t count = le(d + eocd + 10, 2), cd_size = le(d + eocd + 12, 4), cd_off = le(d + eocd + 16, 4);
  if ((count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) && eocd >= 20 &&
      le(d + eocd - 20, 4) == kEocd64Locator) {
    const uint64_t rec = le(d + eocd - 20 + 8, 8);
    MOEPP_CHECK(range_within(rec, 56, n) && le(d + rec, 4) == kEocd64, path,
                ": bad zip64 end-of-central-directory record (offset ", rec, " in a file of ", n, " bytes)");
    count = le(d + rec + 32, 8);
    cd_size = le(d + rec + 40, 8);
    cd_off = le(d + rec + 48, 8);
  }
  MOEPP_CHECK(range_within(cd_off, cd_size, n), path, ": central directory [", cd_off, ", +", cd_size,
              ") runs past the end of the file (", n, " bytes)");
  uint64_t p = cd_off;
  for (uint64_t i = 0; i < count; ++i) {
    MOEPP_CHECK(p + 46 <= cd_off + cd_size && le(d + p, 4) == kCentral, path, ": central directory entry ", i,
                " is malformed");
    const uint64_t method = le(d + p + 10, 2);
    uint64_t csize = le(d + p + 20, 4), usize = le(d + p + 24, 4);
    const uint64_t name_len = le(d + p + 28, 2), extra_len = le(d + p + 30, 2), comment_len = le(d + p + 32, 2);
    uint64_t local = le(d + p + 42, 4);
    MOEPP_CHECK(p + 46 + name_len + extra_len + comment_len <= cd_off + cd_size, path, ": central directory entry ", i,
                " runs past the directory");
    const std::string name(reinterpret_cast<const char*>(d + p + 46), name_len);
    // zip64 extended information: 64-bit fields for those saturated at 0xffffffff.
    // Every field is read only inside the extra block (both ends checked, no sums that wrap).
    const uint64_t extra_end = p + 46 + name_len + extra_len;
    for (uint64_t e = p + 46 + name_len; extra_end - e >= 4;) {
      const uint64_t id = le(d + e, 2), len = le(d + e + 2, 2);
      MOEPP_CHECK(len <= extra_end - e - 4, path, ": entry ", name, ": extra field (id ", id, ") of ", len,
                  " bytes runs past the entry's extra block");
      const uint64_t field_end = e + 4 + len;
      uint64_t q = e + 4;
      if (id == 0x0001) {
        if (usize == 0xffffffffu && field_end - q >= 8) usize = le(d + q, 8), q += 8;
        if (csize == 0xffffffffu && field_end - q >= 8) csize = le(d + q, 8), q += 8;
        if (local == 0xffffffffu && field_end - q >= 8) local = le(d + q, 8);
      }
      e = field_end;
    }
    MOEPP_CHECK(method == 0, path, ": entry ", name, " is compressed (method ", method,
                "); torch.save stores entries uncompressed");
    MOEPP_CHECK(csize == usize, path, ": entry ", name, " has compressed size ", csize, " != size ", usize);
    MOEPP_CHECK(range_within(local, 30, n) && le(d + local, 4) == kLocal, path, ": entry ", name, " has a bad local header offset ",
                local);
    const uint64_t data = local + 30 + le(d + local + 26, 2) + le(d + local + 28, 2);
    MOEPP_CHECK(range_within(data, usize, n), path, ": entry ", name, " [", data, ", +", usize,
                ") runs past the end of the file (", n, " bytes; truncated?)");
    MOEPP_CHECK(entries_.emplace(name, ZipEntry{d + data, usize}).second, path, ": entry ", name,
                " appears twice in the central directory");
    p += 46 + name_len + extra_len + comment_len;
  }
}

ZipEntry ZipReader::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  MOEPP_CHECK(it != entries_.end(), path(), ": the archive has no entry ", name);
  return it->second;
}

}  // namespace moepp
