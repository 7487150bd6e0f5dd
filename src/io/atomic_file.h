// Atomic file replacement and the file operations checkpoints are built from.
//
// write_file_atomic writes "<path>.tmp-<pid>", flushes and fsyncs it, renames it over the
// destination and fsyncs the folder: readers see the old file or the new one, never a
// partial write. It first removes "<path>.tmp-<pid>" files of writers that died (SIGKILL)
// before their rename. A set of files is made atomic one level up (train/checkpoint.cpp): the
// files go into a fresh folder and one symlink rename publishes it.
//
// Fault injection for crash-consistency tests: with MOEPP_KILL_AT_FILE_OP=N in the
// environment, the process sends itself SIGKILL just before its N-th file operation
// (counted from 1 across every function here), as a power cut or `kill -9` would.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace moepp {

void write_file_atomic(const std::string& path, std::string_view bytes);

// write_file_atomic for a file written piece by piece (a model too large to hold twice):
// appends go to the temporary, commit() syncs and renames it over path; a writer destroyed
// before its commit (an exception on the way) removes its temporary.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void append(const void* data, size_t size);
  void commit();

 private:
  void abandon();  // closes and removes the temporary
  std::string path_, tmp_;
  int fd_ = -1;
};

bool file_exists(const std::string& path);  // anything at path (stat succeeds)
void copy_file_atomic(const std::string& from, const std::string& to);

// mkdir -p: creates the folder and its missing parents; throws naming the path.
void make_dirs(const std::string& path);

// Points `link` at `target` atomically (a symlink made beside it, renamed over it).
void replace_symlink(const std::string& link, const std::string& target);

// rm -r of a folder moepp wrote (regular files, symlinks and folders); missing is fine.
void remove_tree(const std::string& path);

// Removes the "*.tmp-<pid>" files and folders directly in dir: leftovers of a process that
// was killed while writing. Call it only while holding the folder's lock.
std::vector<std::string> remove_stale_temporaries(const std::string& dir);

// fsync of a folder, so a rename inside it survives a power cut; throws naming the folder
// (a file system that cannot sync folders, EINVAL, is accepted).
void sync_dir(const std::string& dir);

// The names in a folder but "." and ".."; none when the folder does not exist; throws when
// it cannot be read.
std::vector<std::string> list_dir(const std::string& dir);

// Whether process pid exists (also when it belongs to another user): a "*.tmp-<pid>"
// leftover is provably stale only when it does not.
bool process_exists(long pid);

// The fault-injection point: counts one file operation (see above).
void file_op_point();

}  // namespace moepp
