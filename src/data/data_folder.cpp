#include "data/data_folder.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace moepp {

namespace {

std::string hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t parse_hex(const nlohmann::json& j, const std::string& path, const char* field) {
  MOEPP_CHECK(j.is_string() && j.get<std::string>().size() == 16, path, ": field ", field,
              " is not a 16-digit hex digest: ", j.dump());
  const std::string s = j.get<std::string>();
  MOEPP_CHECK(s.find_first_not_of("0123456789abcdef") == std::string::npos, path, ": field ", field,
              " is not a 16-digit hex digest: ", j.dump());
  return std::stoull(s, nullptr, 16);
}

}  // namespace

void write_data_manifest(const std::string& dir, const DataManifest& m) {
  const nlohmann::json j = {{"format", "moepp-data"},
                            {"version", 1},
                            {"tokenizer", {{"file", "tokenizer.model"}, {"bytes", m.tokenizer.bytes},
                                           {"digest", hex(m.tokenizer.digest)}}},
                            {"vocab_size", m.vocab_size},
                            {"train_tokens", m.train_tokens},
                            {"val_tokens", m.val_tokens}};
  write_file_atomic(dir + "/" + kDataManifestName, j.dump(2) + "\n");
}

void check_data_tokenizer(const std::string& data_dir, const std::string& tokenizer_path, const std::string& who) {
  if (tokenizer_path.empty() || !file_exists(tokenizer_path)) return;
  const std::string manifest = data_dir + "/" + kDataManifestName;
  const std::string data_tok = data_dir + "/tokenizer.model";
  FileStamp want;
  std::string source;
  if (file_exists(manifest)) {
    const nlohmann::json j = read_json_file(manifest);
    MOEPP_CHECK(j.contains("tokenizer") && j["tokenizer"].is_object() && j["tokenizer"].contains("bytes") &&
                    j["tokenizer"]["bytes"].is_number_unsigned() && j["tokenizer"].contains("digest"),
                manifest, ": field tokenizer must hold \"bytes\" and \"digest\"");
    want.bytes = j["tokenizer"]["bytes"].get<uint64_t>();
    want.digest = parse_hex(j["tokenizer"]["digest"], manifest, "tokenizer.digest");
    source = manifest + " records";
    if (file_exists(data_tok)) {
      const FileStamp own = file_stamp(data_tok);
      MOEPP_CHECK(own.bytes == want.bytes && own.digest == want.digest, who, ": ", data_tok,
                  " is not the tokenizer ", data_dir, " was prepared with (", manifest, " records ", want.bytes,
                  " bytes, digest ", hex(want.digest), "; the file has ", own.bytes, " bytes, digest ",
                  hex(own.digest), "): the shards no longer match it. Prepare the folder again with moepp prepare");
    }
    if (tokenizer_path == data_tok) return;
  } else if (file_exists(data_tok)) {
    want = file_stamp(data_tok);
    source = data_tok + " has";
  } else {
    return;
  }
  const FileStamp have = file_stamp(tokenizer_path);
  MOEPP_CHECK(have.bytes == want.bytes && have.digest == want.digest, who, ": ", tokenizer_path,
              " is not the tokenizer ", data_dir, " was prepared with (", source, " ", want.bytes, " bytes, digest ",
              hex(want.digest), "; this one has ", have.bytes, " bytes, digest ", hex(have.digest),
              "), so the token ids would stand for other pieces. Prepare data with this tokenizer: "
              "moepp prepare --input TEXT --out DIR --tokenizer ", tokenizer_path);
}

}  // namespace moepp
