#include "io/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "io/mapped_file.h"

namespace moepp {

namespace {

std::string parent_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "<path>.tmp-<pid>" files of processes that no longer exist: what a writer killed between
// creating and renaming its temporary left. A live pid (even one reused by another
// program) keeps its file: only provably dead writers are cleaned up after.
void remove_dead_temporaries(const std::string& path) {
  const std::string prefix = base_of(path) + ".tmp-";
  const std::string dir = parent_of(path);
  for (const std::string& n : list_dir(dir)) {
    if (n.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = n.substr(prefix.size());
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (pid != long(::getpid()) && !process_exists(pid)) ::unlink((dir + "/" + n).c_str());
  }
}

}  // namespace

void file_op_point() {
  static const long kill_at = [] {
    const char* v = std::getenv("MOEPP_KILL_AT_FILE_OP");
    return v ? std::atol(v) : 0L;
  }();
  static std::atomic<long> count{0};
  if (kill_at > 0 && ++count == kill_at) ::kill(::getpid(), SIGKILL);
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  MOEPP_CHECK(fd >= 0, dir, ": cannot open the folder to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  MOEPP_CHECK(rc == 0 || err == EINVAL, dir, ": cannot sync the folder: ", std::strerror(err));  // EINVAL: cannot
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d && errno == ENOENT) return names;
  MOEPP_CHECK(d, dir, ": cannot list the folder: ", std::strerror(errno));
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

bool process_exists(long pid) { return ::kill(pid_t(pid), 0) == 0 || errno == EPERM; }

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  remove_dead_temporaries(path_);
  tmp_ = path_ + ".tmp-" + std::to_string(getpid());
  file_op_point();
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MOEPP_CHECK(fd_ >= 0, "cannot write ", path_, ": ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() { abandon(); }

void AtomicFileWriter::abandon() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
  fd_ = -1;
}

void AtomicFileWriter::append(const void* data, size_t size) {
  MOEPP_CHECK(fd_ >= 0, "cannot write ", path_, ": the file was already committed or abandoned");
  const char* p = static_cast<const char*>(data);
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd_, p + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const std::string why = std::strerror(errno);
      abandon();
      fail("cannot write ", path_, ": ", why);
    }
    done += size_t(w);
  }
}

void AtomicFileWriter::commit() {
  MOEPP_CHECK(fd_ >= 0, "cannot write ", path_, ": the file was already committed or abandoned");
  file_op_point();
  const int fd = fd_;
  fd_ = -1;
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  if (::close(fd) != 0 || !synced) {
    const std::string why = std::strerror(synced ? errno : sync_errno);
    ::unlink(tmp_.c_str());
    fail("cannot flush ", path_, ": ", why);
  }
  file_op_point();
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_.c_str());
    fail("cannot rename ", tmp_, " to ", path_, ": ", why);
  }
  sync_dir(parent_of(path_));
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter out(path);
  out.append(bytes.data(), bytes.size());
  out.commit();
}

void make_dirs(const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos < path.size() && path[pos] != '/') continue;
    const std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
      fail(path, ": cannot create folder ", part, ": ", std::strerror(errno));
  }
  struct stat st;
  MOEPP_CHECK(::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode), path, ": not a folder");
}

void replace_symlink(const std::string& link, const std::string& target) {
  const std::string tmp = link + ".tmp-" + std::to_string(getpid());
  ::unlink(tmp.c_str());
  file_op_point();
  MOEPP_CHECK(::symlink(target.c_str(), tmp.c_str()) == 0, "cannot create the link ", tmp, ": ", std::strerror(errno));
  file_op_point();
  if (std::rename(tmp.c_str(), link.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail("cannot point ", link, " at ", target, ": ", why);
  }
  sync_dir(parent_of(link));
}

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : list_dir(path)) remove_tree(path + "/" + n);  // depth: folders moepp made (2 levels)
    file_op_point();
    MOEPP_CHECK(::rmdir(path.c_str()) == 0 || errno == ENOENT, "cannot remove ", path, ": ", std::strerror(errno));
  } else {
    file_op_point();
    MOEPP_CHECK(::unlink(path.c_str()) == 0 || errno == ENOENT, "cannot remove ", path, ": ", std::strerror(errno));
  }
}

std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  std::vector<std::string> stale;
  for (const std::string& n : list_dir(dir))
    if (n.find(".tmp-") != std::string::npos) stale.push_back(dir + "/" + n);
  for (const auto& p : stale) remove_tree(p);
  return stale;
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  // Regular files only: copying a FIFO would block, a device would never end.
  write_file_atomic(to, read_regular_file(from, size_t(1) << 30));
}

}  // namespace moepp
