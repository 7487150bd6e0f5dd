// JSON files moepp reads (config.json, trainer_state.json, plans, weight indexes): parse
// errors and missing files become one moepp::Error naming the file.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace moepp {

constexpr size_t kJsonFileMaxBytes = size_t(4) << 20;

// Throws naming the file when it is missing, not a regular file, larger than
// kJsonFileMaxBytes or not valid JSON.
nlohmann::json read_json_file(const std::string& path);

// The "weight_map" (tensor name -> shard file) of dir/index, every shard checked to be a
// plain file name that exists in dir.
std::map<std::string, std::string> read_weight_index(const std::string& dir, const std::string& index);

}  // namespace moepp
