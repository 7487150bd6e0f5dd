#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace moepp {

MappedFile::MappedFile(const std::string& path, MapMode mode) : path_(path), mode_(mode) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  MOEPP_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, ": cannot stat: ", std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file (a FIFO, device or folder); moepp reads only regular files");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    // MAP_PRIVATE either way: writes (copy_on_write) never reach the file, so a read-only
    // descriptor serves both.
    const int prot = mode == MapMode::copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ;
    void* p = ::mmap(nullptr, size_, prot, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map: ", std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

uint8_t* MappedFile::writable_data() const {
  MOEPP_CHECK(mode_ == MapMode::copy_on_write, path_, ": mapped read-only, not copy-on-write");
  return const_cast<uint8_t*>(data_);
}

void MappedFile::release(const uint8_t* p, size_t n) const {
  if (!data_ || n == 0 || p < data_ || p + n > data_ + size_) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) / page * page, end = (uintptr_t(p) + n) / page * page;
  // (Best effort: a failure leaves the pages resident, which is only what no call gives.)
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(o.data_), size_(o.size_), mode_(o.mode_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

std::string read_regular_file(const std::string& path, size_t max_bytes) {
  const MappedFile f(path);
  MOEPP_CHECK(f.size() <= max_bytes, path, ": ", f.size(), " bytes is larger than the ", max_bytes,
              " bytes such a file may have");
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

}  // namespace moepp
