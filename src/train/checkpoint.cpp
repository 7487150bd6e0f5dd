#include "train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/model_folder.h"

namespace moepp {

using json = nlohmann::json;

void ensure_writable_dir(const std::string& dir) {
  try {
    make_dirs(dir);
  } catch (const Error& e) {
    fail(dir, ": cannot create the run folder (", e.what(), ")");
  }
  MOEPP_CHECK(::access(dir.c_str(), W_OK) == 0, dir, ": the run folder is not writable");
}

void save_checkpoint(const std::string& dir, const ModelConfig& cfg, const ModelParams<float>& params,
                     AdamW& opt, const json& state, const std::string& tokenizer_model) {
  ensure_writable_dir(dir);
  write_params(dir + "/optimizer.m.safetensors", cfg, opt.m(), "m.");
  write_params(dir + "/optimizer.v.safetensors", cfg, opt.v(), "v.");
  save_model_folder(dir, cfg, params, tokenizer_model);
  json s = state;
  s["optimizer_step"] = opt.step();
  write_file_atomic(dir + "/trainer_state.json", s.dump(2) + "\n");
}

json load_checkpoint(const std::string& dir, const ModelConfig& cfg, ModelParams<float>& params, AdamW& opt) {
  const std::string state_path = dir + "/trainer_state.json";
  MOEPP_CHECK(file_exists(state_path), dir, ": no checkpoint to resume (trainer_state.json is missing)");
  const json s = read_json_file(state_path);
  read_params(dir + "/model.safetensors", cfg, params);
  read_params(dir + "/optimizer.m.safetensors", cfg, opt.m(), "m.");
  read_params(dir + "/optimizer.v.safetensors", cfg, opt.v(), "v.");
  MOEPP_CHECK(s.contains("optimizer_step") && s["optimizer_step"].is_number_integer(), state_path,
              ": field optimizer_step is missing");
  opt.set_step(s["optimizer_step"].get<int64_t>());
  return s;
}

}  // namespace moepp
