// FolderLock: an exclusive flock on "<dir>/.lock" held for the object's lifetime, so two
// processes never write one run folder at once (interleaved metrics.jsonl, checkpoints
// overwriting each other). The kernel drops the lock when the process dies, SIGKILL too,
// so a stale lock file never blocks a later run.
#pragma once
#include <string>

namespace moepp {

class FolderLock {
 public:
  // Throws moepp::Error naming the folder (and the holder's pid when known) when another
  // process holds the lock. `what` names the work in the message ("training").
  FolderLock(const std::string& dir, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace moepp
