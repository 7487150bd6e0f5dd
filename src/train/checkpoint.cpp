#include "train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/digest.h"
#include "model/model_folder.h"

namespace moepp {

using json = nlohmann::json;

namespace {

const char* const kStateFile = "trainer_state.json";

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string link_target(const std::string& p) {
  char buf[4096];
  const ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, size_t(n)) : std::string();
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// A fresh name in checkpoints/: step-N, or step-N-K when step-N exists (the final
// checkpoint of a run can land on the step of a periodic one, still published).
std::string fresh_checkpoint_name(const std::string& checkpoints, int64_t step) {
  char base[32];
  std::snprintf(base, sizeof base, "step-%08lld", (long long)step);
  std::string name = base;
  for (int k = 1; file_exists(checkpoints + "/" + name); ++k) name = std::string(base) + "-" + std::to_string(k);
  return name;
}

template <typename T>
T state_field(const json& s, const char* key, const std::string& path, T lo) {
  MOEPP_CHECK(s.contains(key) && s[key].is_number_integer(), path, ": field ", key, " is missing or not an integer");
  MOEPP_CHECK(!s[key].is_number_unsigned() || s[key].get<uint64_t>() <= uint64_t(INT64_MAX), path, ": field ", key,
              " is out of range");
  const int64_t v = s[key].get<int64_t>();
  MOEPP_CHECK(v >= int64_t(lo), path, ": field ", key, " is ", v, "; it must be at least ", int64_t(lo));
  return T(v);
}

}  // namespace

void ensure_writable_dir(const std::string& dir) {
  try {
    make_dirs(dir);
  } catch (const Error& e) {
    fail(dir, ": cannot create the run folder (", e.what(), ")");
  }
  MOEPP_CHECK(::access(dir.c_str(), W_OK) == 0, dir, ": the run folder is not writable");
}

std::string checkpoint_dir(const std::string& run_dir) {
  const std::string current = run_dir + "/current";
  return is_dir(current) ? current : run_dir;
}

std::vector<std::string> clean_run_folder(const std::string& dir) {
  std::vector<std::string> removed = remove_stale_temporaries(dir);
  const std::string checkpoints = dir + "/checkpoints";
  const std::string live = link_target(dir + "/current");
  for (const std::string& n : list_dir(checkpoints)) {
    if ("checkpoints/" + n == live) continue;
    // Folders of no checkpoint in force: unpublished (killed before the switch) or
    // superseded (killed before their removal).
    remove_tree(checkpoints + "/" + n);
    removed.push_back(checkpoints + "/" + n);
  }
  return removed;
}

void save_checkpoint(const std::string& dir, const ModelConfig& cfg, const ModelParams<float>& params,
                     AdamW& opt, const json& state, const std::string& tokenizer_model) {
  ensure_writable_dir(dir);
  const std::string checkpoints = dir + "/checkpoints";
  make_dirs(checkpoints);
  const std::string name = fresh_checkpoint_name(checkpoints, state.at("step").get<int64_t>());
  const std::string staged = checkpoints + "/" + name + ".tmp-" + std::to_string(::getpid());
  remove_tree(staged);
  make_dirs(staged);

  // The stamps of the large files come from the bytes as they were written (no read-back).
  std::map<std::string, FileStamp> stamps;
  stamps["optimizer.m.safetensors"] = write_params(staged + "/optimizer.m.safetensors", cfg, opt.m(), "m.");
  stamps["optimizer.v.safetensors"] = write_params(staged + "/optimizer.v.safetensors", cfg, opt.v(), "v.");
  stamps["model.safetensors"] = write_params(staged + "/model.safetensors", cfg, params);
  write_file_atomic(staged + "/config.json", cfg.to_json().dump(2) + "\n");
  stamps["config.json"] = file_stamp(staged + "/config.json");
  if (!tokenizer_model.empty()) {
    copy_file_atomic(tokenizer_model, staged + "/tokenizer.model");
    stamps["tokenizer.model"] = file_stamp(staged + "/tokenizer.model");
  }
  json s = state;
  s["optimizer_step"] = opt.step();
  s["checkpoint"] = name;
  json files = json::object();
  for (const auto& [f, stamp] : stamps) files[f] = {{"bytes", stamp.bytes}, {"digest", hex64(stamp.digest)}};
  s["files"] = files;
  write_file_atomic(staged + "/" + kStateFile, s.dump(2) + "\n");

  // Publish: the complete folder under its final name, then one rename switches `current`.
  file_op_point();
  MOEPP_CHECK(std::rename(staged.c_str(), (checkpoints + "/" + name).c_str()) == 0, "cannot publish checkpoint ",
              staged, ": ", std::strerror(errno));
  sync_dir(checkpoints);
  const std::string previous = link_target(dir + "/current");
  replace_symlink(dir + "/current", "checkpoints/" + name);

  // The top-level names are fixed links into current/ (made once; a run folder from before
  // checkpoint folders has regular files there, replaced here).
  auto link_top = [&](const std::string& f) {
    if (link_target(dir + "/" + f) != "current/" + f) replace_symlink(dir + "/" + f, "current/" + f);
  };
  for (const auto& [f, stamp] : stamps) link_top(f);
  link_top(kStateFile);
  if (!previous.empty() && previous != "checkpoints/" + name) remove_tree(dir + "/" + previous);
}

json read_checkpoint_state(const std::string& dir) {
  const std::string state_path = checkpoint_dir(dir) + "/" + kStateFile;
  MOEPP_CHECK(file_exists(state_path), dir, ": no checkpoint to resume (trainer_state.json is missing)");
  const json s = read_json_file(state_path);
  MOEPP_CHECK(s.is_object(), state_path, ": not a JSON object");
  state_field<int64_t>(s, "step", state_path, 0);
  state_field<uint64_t>(s, "loader_epoch", state_path, 0);
  state_field<uint64_t>(s, "loader_index", state_path, 0);
  const int64_t opt_step = state_field<int64_t>(s, "optimizer_step", state_path, 0);
  MOEPP_CHECK(opt_step == s["step"].get<int64_t>(), state_path, ": optimizer_step ", opt_step,
              " differs from step ", s["step"].get<int64_t>());
  return s;
}

void load_checkpoint(const std::string& dir, const json& s, const ModelConfig& cfg, ModelParams<float>& params,
                     AdamW& opt) {
  const std::string base = checkpoint_dir(dir);
  const std::string state_path = base + "/" + kStateFile;
  // Every file must be the one this state was written with.
  if (s.contains("files")) {
    MOEPP_CHECK(s["files"].is_object(), state_path, ": field files is not an object");
    std::string bad;
    for (auto it = s["files"].begin(); it != s["files"].end(); ++it) {
      const std::string p = base + "/" + it.key();
      const json& want = it.value();
      MOEPP_CHECK(want.is_object() && want.contains("bytes") && want.contains("digest"), state_path, ": files.",
                  it.key(), " lacks bytes or digest");
      if (!file_exists(p)) {
        bad += "\n  " + it.key() + ": missing";
        continue;
      }
      const FileStamp got = file_stamp(p);
      const std::string digest = hex64(got.digest);
      if (got.bytes != want["bytes"].get<uint64_t>() || digest != want["digest"].get<std::string>())
        bad += "\n  " + it.key() + ": " + std::to_string(got.bytes) + " bytes, digest " + digest + "; the state says " +
               want["bytes"].dump() + " bytes, digest " + want["digest"].get<std::string>();
    }
    MOEPP_CHECK(bad.empty(), base, ": the checkpoint's files disagree with ", kStateFile,
                " (written at step ", s["step"].get<int64_t>(), "); refusing to resume from a mixed checkpoint:", bad);
  }
  read_params(base + "/model.safetensors", cfg, params);
  read_params(base + "/optimizer.m.safetensors", cfg, opt.m(), "m.");
  read_params(base + "/optimizer.v.safetensors", cfg, opt.v(), "v.");
  opt.set_step(s["optimizer_step"].get<int64_t>());
}

}  // namespace moepp
