// Atomic file replacement: write to "<path>.tmp-<pid>", flush and fsync, then rename over
// the destination. Readers see the old file or the new one, never a partial write.
#pragma once
#include <string>
#include <string_view>

namespace moepp {

void write_file_atomic(const std::string& path, std::string_view bytes);

// mkdir -p: creates the folder and its missing parents; throws naming the path.
void make_dirs(const std::string& path);

}  // namespace moepp
