// Checkpoints and run folders under attack (issue: nothing is silently lost): a mixed set
// of files, an edited trainer state, a second trainer on the same folder, leftovers of a
// killed writer, and resume flags that contradict the recorded run.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/shards.h"
#include "io/atomic_file.h"
#include "io/file_lock.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace moepp;
using namespace moepp::test;
using json = nlohmann::json;

namespace {

std::string temp_dir() {
  return scratch_dir("moepp-ckpt");
}

std::string make_data() {
  const std::string dir = temp_dir();
  Rng rng(3);
  std::vector<int32_t> t(20000);
  for (auto& x : t) x = int32_t(rng.below(32));
  write_token_shard(dir + "/train.bin", t);
  write_token_shard(dir + "/val.bin", std::vector<int32_t>(t.begin(), t.begin() + 2000));
  return dir;
}

TrainOptions run_options(const std::string& data, const std::string& out, int64_t steps) {
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.model = ModelConfig::preset("tiny", 32);
  o.steps = steps;
  o.batch = 4;
  o.seq = 16;
  o.eval_batches = 1;
  o.quiet = true;
  return o;
}

std::vector<double> losses(const std::string& run) {
  std::vector<double> l;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line);
    if (j.contains("loss")) l.push_back(j["loss"].get<double>());
  }
  return l;
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(CheckpointHostile, AMixedSetOfFilesIsRefusedNamingTheFile) {
  const std::string data = make_data(), a = temp_dir() + "/a", b = temp_dir() + "/b";
  train(run_options(data, a, 3));
  train(run_options(data, b, 5));
  // Step 5's weights under step 3's state: what a kill between files used to leave.
  write_file_atomic(a + "/current/model.safetensors", slurp(b + "/current/model.safetensors"));
  TrainOptions o = run_options(data, a, 6);
  o.resume = true;
  expect_error_mentioning([&] { train(o); }, "disagree with trainer_state.json");
  expect_error_mentioning([&] { train(o); }, "model.safetensors: ");
}

TEST(CheckpointHostile, TrainerStateFieldsAreChecked) {
  const std::string data = make_data(), run = temp_dir() + "/r";
  train(run_options(data, run, 2));
  const std::string state = run + "/current/trainer_state.json";
  json s = read_json_file(state);
  s["step"] = -50;
  write_file_atomic(state, s.dump());
  TrainOptions o = run_options(data, run, 4);
  o.resume = true;
  expect_error_mentioning([&] { train(o); }, "field step is -50; it must be at least 0");
  s["step"] = 2;
  s["optimizer_step"] = 7;
  write_file_atomic(state, s.dump());
  expect_error_mentioning([&] { train(o); }, "optimizer_step 7 differs from step 2");
}

TEST(CheckpointHostile, ASecondTrainerOnTheSameFolderIsRefused) {
  const std::string data = make_data(), run = temp_dir() + "/r";
  make_dirs(run);
  const FolderLock held(run, "training");  // as another process's trainer would
  expect_error_mentioning([&] { train(run_options(data, run, 2)); }, "is already training in this folder");
}

TEST(CheckpointHostile, LeftoversOfAKilledWriterAreRemoved) {
  const std::string data = make_data(), run = temp_dir() + "/r";
  train(run_options(data, run, 2));
  std::ofstream(run + "/model.safetensors.tmp-99999") << "partial";
  make_dirs(run + "/checkpoints/step-00000003.tmp-99999");
  std::ofstream(run + "/checkpoints/step-00000003.tmp-99999/model.safetensors") << "partial";
  TrainOptions o = run_options(data, run, 3);
  o.resume = true;
  train(o);
  EXPECT_FALSE(file_exists(run + "/model.safetensors.tmp-99999"));
  EXPECT_FALSE(file_exists(run + "/checkpoints/step-00000003.tmp-99999"));
  EXPECT_EQ(read_json_file(run + "/trainer_state.json").at("step").get<int64_t>(), 3);
}

TEST(CheckpointHostile, ResumeUsesTheRecordedRunAndRefusesAConflictingFlag) {
  const std::string data = make_data(), full = temp_dir() + "/f", split = temp_dir() + "/s";
  train(run_options(data, full, 8));
  TrainOptions first = run_options(data, split, 8);
  first.stop_after = 3;
  train(first);
  // Without the flags given, other values in the options are the recorded ones...
  TrainOptions second = run_options(data, split, 8);
  second.resume = true;
  second.batch = 2;
  second.seed = 99;
  second.lr = 0.5;
  // ...but a flag the user typed that disagrees is an error naming both values.
  TrainOptions typed = second;
  typed.given = {"--batch"};
  expect_error_mentioning([&] { train(typed); }, "--batch 2 conflicts with the run's recorded batch 4");
  train(second);
  const auto a = losses(full), b = losses(split);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t s = 0; s < a.size(); ++s) EXPECT_EQ(a[s], b[s]) << "step " << s + 1;
}

TEST(CheckpointHostile, OptionsThatWouldDivideByZeroAreRefused) {
  const std::string data = make_data(), run = temp_dir() + "/r";
  TrainOptions o = run_options(data, run, 2);
  o.log_every = 0;
  expect_error_mentioning([&] { train(o); }, "--log-every is 0; it must be at least 1");
  o = run_options(data, run, 2);
  o.seq = 0;
  expect_error_mentioning([&] { train(o); }, "--seq is 0");
  o = run_options(data, run, 2);
  o.lr = -1e-3;
  expect_error_mentioning([&] { train(o); }, "--lr is -0.001");
  EXPECT_FALSE(file_exists(run + "/metrics.jsonl")) << "nothing may be written";
}

TEST(CheckpointHostile, TheRunFolderStaysAModelFolder) {
  const std::string data = make_data(), run = temp_dir() + "/r";
  TrainOptions o = run_options(data, run, 3);
  o.checkpoint_every = 1;
  train(o);
  const LoadedModel m = load_model_folder(run);  // through the top-level links
  EXPECT_EQ(m.config.num_hidden_layers, 2);
  // One checkpoint folder survives, the one `current` points at, and the final checkpoint
  // was not written twice over the periodic one of the same step.
  for (int s = 1; s <= 3; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "%s/checkpoints/step-%08d", run.c_str(), s);
    EXPECT_EQ(file_exists(name), s == 3) << name;
    EXPECT_FALSE(file_exists(std::string(name) + "-1")) << name;
  }
  EXPECT_EQ(read_json_file(run + "/trainer_state.json").at("step").get<int64_t>(), 3);
}

TEST(CheckpointHostile, ARunFolderOfPlainFilesStillResumesAndIsConverted) {
  // The layout before checkpoint folders: the files themselves at the top, no manifest.
  const std::string data = make_data(), full = temp_dir() + "/f", run = temp_dir() + "/r";
  train(run_options(data, full, 4));
  TrainOptions first = run_options(data, run, 4);
  first.stop_after = 2;
  train(first);
  for (const char* f : {"config.json", "model.safetensors", "optimizer.m.safetensors", "optimizer.v.safetensors"}) {
    const std::string bytes = slurp(run + "/current/" + f);
    ::unlink((run + "/" + f).c_str());
    write_file_atomic(run + "/" + f, bytes);
  }
  json s = read_json_file(run + "/current/trainer_state.json");
  s.erase("files");
  ::unlink((run + "/trainer_state.json").c_str());
  write_file_atomic(run + "/trainer_state.json", s.dump());
  ::unlink((run + "/current").c_str());
  remove_tree(run + "/checkpoints");
  TrainOptions second = run_options(data, run, 4);
  second.resume = true;
  train(second);
  const auto a = losses(full), b = losses(run);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;
  char target[256] = {};
  ASSERT_GT(::readlink((run + "/model.safetensors").c_str(), target, sizeof target - 1), 0) << "converted to links";
  EXPECT_STREQ(target, "current/model.safetensors");
}
