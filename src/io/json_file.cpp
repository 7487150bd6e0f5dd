#include "io/json_file.h"

#include <sys/stat.h>

#include "core/error.h"
#include "io/mapped_file.h"

namespace moepp {

nlohmann::json read_json_file(const std::string& path) {
  // Regular files only (a FIFO named config.json must not block), and no larger than any
  // config, index, state or plan moepp reads.
  const std::string text = read_regular_file(path, kJsonFileMaxBytes);
  // The parser stops at a NUL byte and would accept `{...}\0anything`, ignoring the rest.
  const size_t nul = text.find('\0');
  MOEPP_CHECK(nul == std::string::npos, path, ": a NUL byte at offset ", nul, " (not a JSON text file)");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

std::map<std::string, std::string> read_weight_index(const std::string& dir, const std::string& index) {
  const std::string path = dir + "/" + index;
  const nlohmann::json j = read_json_file(path);
  MOEPP_CHECK(j.contains("weight_map") && j["weight_map"].is_object(), path, ": no weight_map object");
  std::map<std::string, std::string> m;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    MOEPP_CHECK(it.value().is_string(), path, ": weight_map.", it.key(), " is not a file name");
    const std::string shard = it.value().get<std::string>();
    MOEPP_CHECK(!shard.empty() && shard != "." && shard != ".." && shard.find('/') == std::string::npos, path,
                ": weight_map.", it.key(), " names shard \"", shard, "\", which is not a plain file name in the folder");
    struct stat st;
    MOEPP_CHECK(::stat((dir + "/" + shard).c_str(), &st) == 0 && S_ISREG(st.st_mode), path,
                ": weight_map names shard ", shard, " (for ", it.key(), "), which does not exist or is not a regular file");
    m[it.key()] = shard;
  }
  return m;
}

}  // namespace moepp
