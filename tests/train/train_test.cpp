// Training end to end on a generated, learnable token task: the loss falls far below
// chance, tau moves routing the way the balance loss predicts, a checkpoint round-trips
// bit-exactly and a resumed run continues the uninterrupted run's loss curve exactly.
#include "train/trainer.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/shards.h"
#include "model/model_folder.h"
#include "train/checkpoint.h"
#include "train/schedule.h"
#include "test_util.h"

using namespace moepp;
using json = nlohmann::json;

namespace {

std::string temp_dir(const std::string& name) {
  const std::string dir = test::scratch_dir("moepp-test") + "/" + name;
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

// Segments of 24 tokens counting up mod V by a step (1, 2 or 3) that the model has to read
// from the context; each segment starts at a random token.
std::vector<int32_t> counting_task(int64_t n, int V, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t;
  while (int64_t(t.size()) < n) {
    int32_t x = int32_t(rng.below(uint64_t(V)));
    const int32_t step = 1 + int32_t(rng.below(3));
    for (int i = 0; i < 24; ++i, x = (x + step) % V) t.push_back(x);
  }
  t.resize(size_t(n));
  return t;
}

std::string make_task_data(int V) {
  const std::string dir = temp_dir("data");
  write_token_shard(dir + "/train.bin", counting_task(60000, V, 1));
  write_token_shard(dir + "/val.bin", counting_task(4000, V, 2));
  return dir;
}

TrainOptions tiny_run(const std::string& data, const std::string& out, int64_t steps) {
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.model = ModelConfig::preset("tiny", 32);
  o.steps = steps;
  o.batch = 8;
  o.seq = 32;
  o.lr = 3e-3;
  o.eval_batches = 8;
  o.quiet = true;
  return o;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

std::vector<double> step_losses(const std::string& run) {
  std::vector<double> l;
  for (const auto& j : read_jsonl(run + "/metrics.jsonl"))
    if (j.contains("loss")) l.push_back(j["loss"].get<double>());
  return l;
}

// A stopped and resumed run's per-step losses equal the uninterrupted run's, bit for bit.
void expect_same_loss_curve(const std::string& full, const std::string& split, size_t steps) {
  const auto a = step_losses(full), b = step_losses(split);
  ASSERT_EQ(a.size(), steps);
  ASSERT_EQ(b.size(), steps);
  for (size_t s = 0; s < steps; ++s) EXPECT_EQ(a[s], b[s]) << "step " << s + 1;
}

}  // namespace

TEST(Train, TinyMoeppLearnsTheCountingTask) {
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  const TrainResult r = train(tiny_run(data, run, 300));
  EXPECT_EQ(r.steps_done, 300);
  // Chance is ln 32 = 3.47. Reading the step from context and counting leaves only the
  // first tokens of each segment unpredictable (about 2 of 24 at ln 32 each: ~0.35).
  EXPECT_LT(r.val_loss, 0.9) << "validation loss after 300 steps";
  const auto losses = step_losses(run);
  ASSERT_EQ(losses.size(), 300u);
  EXPECT_GT(losses.front(), 3.0);
}

// Mixed precision (--precision bf16) learns the same task; the validation pass itself
// runs in f32, so its loss is the model's as `moepp eval` would measure it.
TEST(Train, TinyMoeppLearnsTheCountingTaskWithBf16Products) {
  if (!gemm_bf16_available()) GTEST_SKIP() << "no native bf16 products on this CPU or build";
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  TrainOptions o = tiny_run(data, run, 300);
  o.precision = GemmPrecision::bf16;
  const TrainResult r = train(o);
  EXPECT_EQ(r.steps_done, 300);
  EXPECT_LT(r.val_loss, 0.9) << "validation loss after 300 steps";
  const auto losses = step_losses(run);
  ASSERT_EQ(losses.size(), 300u);
  EXPECT_GT(losses.front(), 3.0);
  std::ifstream st(checkpoint_dir(run) + "/trainer_state.json");
  EXPECT_EQ(json::parse(st).at("precision"), "bf16");
}

// A resumed bf16 run rounds the restored weights again and continues the same curve; a
// --precision that disagrees with the recorded one is refused.
TEST(Train, Bf16ResumeContinuesTheSameLossCurveAndKeepsItsPrecision) {
  if (!gemm_bf16_available()) GTEST_SKIP() << "no native bf16 products on this CPU or build";
  const std::string data = make_task_data(32);
  const std::string full = temp_dir("full"), split = temp_dir("split");
  auto bf16_run = [&](const std::string& out) {
    TrainOptions o = tiny_run(data, out, 20);
    o.precision = GemmPrecision::bf16;
    return o;
  };
  train(bf16_run(full));
  TrainOptions first = bf16_run(split);
  first.stop_after = 8;
  train(first);
  TrainOptions wrong = tiny_run(data, split, 20);
  wrong.resume = true;
  wrong.given.insert("--precision");  // --precision f32 given on the command line
  EXPECT_THROW(train(wrong), Error);
  TrainOptions second = tiny_run(data, split, 20);  // f32 by default, not given: the recorded bf16 holds
  second.resume = true;
  train(second);
  expect_same_loss_curve(full, split, 20);
}

// With a capacity factor (SPEC §2.4) the training steps drop slots over capacity and say
// how many in metrics.jsonl; the model still learns the task, and validation (like every
// use of the trained model) computes every slot.
TEST(Train, TinyMoeppLearnsTheCountingTaskWithACapacityFactor) {
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  TrainOptions o = tiny_run(data, run, 300);
  o.model.capacity_factor = 1.0;
  const TrainResult r = train(o);
  EXPECT_LT(r.val_loss, 0.9) << "validation loss after 300 steps";
  int64_t steps = 0;
  for (const auto& j : read_jsonl(run + "/metrics.jsonl")) {
    if (j.contains("routing")) {
      ++steps;
      const double dropped = j["routing"].value("dropped_share", 0.0);
      EXPECT_GT(dropped, 0.0) << "step " << j.value("step", -1);
      EXPECT_LT(dropped, 0.5) << "step " << j.value("step", -1);
    }
    if (j.contains("val_routing")) {
      EXPECT_FALSE(j["val_routing"].contains("dropped_share")) << "validation drops nothing";
    }
  }
  EXPECT_GT(steps, 0);
  EXPECT_EQ(load_model_folder(checkpoint_dir(run)).config.capacity_factor, 1.0) << "the run's config records it";
}

TEST(Train, SmallerTauSendsMoreSlotsToZeroComputationExperts) {
  const std::string data = make_task_data(32);
  auto zc_share = [&](double tau) {
    TrainOptions o = tiny_run(data, temp_dir("tau"), 150);
    o.model.moe.balance_tau = tau;
    o.model.balance_coef = 0.1;
    train(o);
    const auto lines = read_jsonl(o.out_dir + "/metrics.jsonl");
    const json& routing = lines.back().at("val_routing");
    return 1.0 - routing.at("share").at("ffn").get<double>();
  };
  const double low = zc_share(0.1), high = zc_share(1.0);
  EXPECT_GT(low, high + 0.05) << "zero-computation share at tau 0.1: " << low << ", at tau 1.0: " << high;
}

TEST(Train, CheckpointRoundTripsBitExactly) {
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  train(tiny_run(data, run, 5));
  const LoadedModel a = load_model_folder(run);
  const std::string copy = temp_dir("copy");
  save_model_folder(copy, a.config, a.params);
  const LoadedModel b = load_model_folder(copy);
  EXPECT_EQ(a.config.to_json(), b.config.to_json());
  std::vector<const Tensor<float>*> tb;
  b.params.for_each(b.config, [&](const std::string&, const Tensor<float>& t) { tb.push_back(&t); });
  size_t i = 0;
  a.params.for_each(a.config, [&](const std::string& name, const Tensor<float>& t) {
    const Tensor<float>& u = *tb[i++];
    ASSERT_EQ(t.shape(), u.shape()) << name;
    EXPECT_EQ(std::memcmp(t.data(), u.data(), size_t(t.numel()) * 4), 0) << name;
  });
}

TEST(Train, ResumeContinuesTheSameLossCurve) {
  const std::string data = make_task_data(32);
  const std::string full = temp_dir("full"), split = temp_dir("split");
  train(tiny_run(data, full, 30));
  TrainOptions first = tiny_run(data, split, 30);
  first.stop_after = 12;
  const TrainResult r1 = train(first);
  EXPECT_EQ(r1.steps_done, 12);
  TrainOptions second = tiny_run(data, split, 30);
  second.resume = true;
  train(second);
  expect_same_loss_curve(full, split, 30);
}

TEST(Train, RefusesToOverwriteARunWithoutResume) {
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  train(tiny_run(data, run, 2));
  EXPECT_THROW(train(tiny_run(data, run, 2)), Error);
}

TEST(Train, UnwritableRunFolderIsAClearError) {
  if (geteuid() == 0) {
    // root writes anywhere; use a path under a regular file instead, which no one can create.
    const std::string data = make_task_data(32);
    const std::string file = temp_dir("f") + "/plain";
    std::ofstream(file) << "x";
    try {
      train(tiny_run(data, file + "/run", 2));
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("run folder"), std::string::npos) << e.what();
    }
    return;
  }
  const std::string data = make_task_data(32);
  const std::string ro = temp_dir("ro");
  ::chmod(ro.c_str(), 0555);
  EXPECT_THROW(train(tiny_run(data, ro + "/run", 2)), Error);
}

TEST(Train, TokenIdsOutsideTheVocabularyAreRejectedBeforeTraining) {
  const std::string data = make_task_data(64);  // ids up to 63
  const std::string run = temp_dir("run");
  try {
    train(tiny_run(data, run, 2));  // vocabulary of 32
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the model's vocabulary of 32"), std::string::npos) << e.what();
  }
  struct stat st;
  EXPECT_NE(::stat((run + "/model.safetensors").c_str(), &st), 0) << "nothing may be written";
}

// The ETA's count of validation passes to come: against counting them one step at a time,
// and against the passes a real run writes to metrics.jsonl.
TEST(Train, ValidationPassesLeftCountsThePassesTheRunMakes) {
  for (int64_t total = 1; total <= 12; ++total)
    for (int64_t every = 0; every <= 5; ++every)
      for (int64_t done = 0; done <= total; ++done) {
        int64_t count = done < total ? 1 : 0;  // the final pass
        for (int64_t k = done + 1; k < total; ++k) count += every > 0 && k % every == 0;
        EXPECT_EQ(validation_passes_left(done, total, every), count) << total << " " << every << " " << done;
      }
  const std::string data = make_task_data(32);
  const std::string run = temp_dir("run");
  TrainOptions o = tiny_run(data, run, 7);
  o.eval_every = 3;
  o.eval_batches = 1;
  train(o);
  int64_t written = 0;
  for (const auto& j : read_jsonl(run + "/metrics.jsonl")) written += j.contains("val_loss");
  EXPECT_EQ(written, 3);  // after steps 3 and 6, and at the end
  EXPECT_EQ(validation_passes_left(0, 7, 3), written);
}
