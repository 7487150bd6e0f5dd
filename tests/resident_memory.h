// The process's resident set from /proc/self/status, for tests that bound a peak: reset
// the peak with reset_peak_resident() (Linux clear_refs), do the work, read VmHWM.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace moepp::test {

// A field of /proc/self/status in bytes (VmRSS, VmHWM); -1 when absent.
inline int64_t status_bytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return -1;
}

// Restarts VmHWM from the current resident set; false where the kernel does not offer it.
inline bool reset_peak_resident() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f.good()) return false;
  f << "5";
  return f.good();
}

}  // namespace moepp::test
