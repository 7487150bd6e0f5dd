// The experiment runner: the report is built from run results alone (checked number by
// number on synthetic results), finished runs are skipped, failed runs are reported.
#include "study/experiment.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "core/rng.h"
#include "data/shards.h"
#include "kernels/mixed_precision.h"
#include "test_util.h"

using namespace moepp;
using json = nlohmann::json;

TEST(ExperimentReport, EveryNumberComesFromTheResults) {
  const json plan = {{"name", "demo"},
                     {"base", {{"preset", "tiny"}}},
                     {"runs", {{{"name", "vanilla"}, {"vanilla", true}},
                               {{"name", "moepp-tau0.5"}, {"tau", 0.5}, {"capacity_factor", 1.25}},
                               {{"name", "broken"}, {"tau", -1}}}}};
  const std::vector<json> results = {
      {{"name", "vanilla"}, {"status", "done"}, {"val_loss", 3.5}, {"val_ppl", 33.115452}, {"ffn_experts_per_token", 2.0},
       {"top_k", 2}, {"zc_experts", 0}, {"train_tokens_per_s", 1000.4}, {"moe_forward_s", 0.30}},
      {{"name", "moepp-tau0.5"}, {"status", "done"}, {"val_loss", 3.41234}, {"val_ppl", 30.3}, {"ffn_experts_per_token", 1.25},
       {"top_k", 2}, {"zc_experts", 4}, {"train_tokens_per_s", 1499.6}, {"moe_forward_s", 0.20},
       {"capacity_factor", 1.25}, {"train_dropped_share", 0.38149}},
      {{"name", "broken"}, {"status", "failed"}, {"error", "moe config: balance_tau must be non-negative, got -1"}}};
  const std::string md = experiment_report(plan, results);
  EXPECT_NE(md.find("| vanilla | 3.5000 | 33.12 | 2.000 | 1.000 | 1.00x | 1000 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| moepp-tau0.5 | 3.4123 | 30.30 | 1.250 | 0.625 | 1.50x | 1500 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| broken | failed |"), std::string::npos) << md;
  EXPECT_NE(md.find("- broken: moe config: balance_tau must be non-negative, got -1"), std::string::npos) << md;
  EXPECT_NE(md.find("(baseline: vanilla)"), std::string::npos) << md;
  // Each run's own fields (in the order JSON objects keep: by name), and what its
  // capacity dropped in training.
  EXPECT_NE(md.find("- vanilla: vanilla true\n"), std::string::npos) << md;
  EXPECT_NE(md.find("- moepp-tau0.5: capacity_factor 1.25, tau 0.5; capacity factor 1.25 dropped 38.1% of routed "
                    "slots in training (mean over steps)\n"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("- broken: tau -1\n"), std::string::npos) << md;
}

TEST(ExperimentRunner, SkipsFinishedRunsAndReportsFailedOnes) {
  const std::string dir = test::scratch_dir("moepp-exp");
  // Learnable tokens: counting segments (as in train_test).
  Rng rng(3);
  std::vector<int32_t> t;
  while (t.size() < 8000) {
    int32_t x = int32_t(rng.below(32));
    for (int i = 0; i < 16; ++i, x = (x + 1) % 32) t.push_back(x);
  }
  ::mkdir((dir + "/data").c_str(), 0755);
  write_token_shard(dir + "/data/train.bin", t);
  write_token_shard(dir + "/data/val.bin", std::vector<int32_t>(t.begin(), t.begin() + 1000));
  const json plan = {{"name", "test"},
                     {"base", {{"preset", "tiny"}, {"vocab", 32}, {"steps", 6}, {"batch", 4}, {"seq", 16}, {"eval_batches", 2}}},
                     {"runs", {{{"name", "vanilla"}, {"vanilla", true}}, {{"name", "moepp"}, {"tau", 0.5}},
                               {{"name", "broken"}, {"tau", -1.0}}, {{"name", "f16"}, {"precision", "f16"}},
                               {{"name", "capacity"}, {"tau", 0.5}, {"capacity_factor", 1.0}}}}};
  json with_bf16 = plan;  // a bf16 run where the CPU multiplies bf16 natively
  if (gemm_bf16_available()) with_bf16["runs"].push_back({{"name", "moepp-bf16"}, {"tau", 0.5}, {"precision", "bf16"}});
  std::ofstream(dir + "/plan.json") << with_bf16.dump();
  ExperimentOptions o{dir + "/plan.json", dir + "/data", dir + "/exp", 0, true};
  const std::string first = run_experiment(o);
  EXPECT_NE(first.find("| vanilla | "), std::string::npos) << first;
  EXPECT_NE(first.find("| moepp | "), std::string::npos) << first;
  EXPECT_NE(first.find("| broken | failed |"), std::string::npos) << first;
  EXPECT_NE(first.find("balance_tau must be non-negative"), std::string::npos) << first;
  EXPECT_NE(first.find("\"precision\" must be \"f32\" or \"bf16\", got \"f16\""), std::string::npos) << first;
  EXPECT_NE(first.find("| capacity | "), std::string::npos) << first;
  const json capacity_config = json::parse(std::ifstream(dir + "/exp/runs/capacity/config.json"));
  EXPECT_EQ(capacity_config.at("moepp").at("capacity_factor"), 1.0) << "the plan's capacity_factor reaches the run";
  // The result's dropped share is the mean over the run's logged steps (a step that
  // dropped nothing logs no share); a dropless run has none.
  {
    double sum = 0;
    int steps = 0;
    std::ifstream log(dir + "/exp/runs/capacity/metrics.jsonl");
    for (std::string line; std::getline(log, line);) {
      const json j = json::parse(line);
      if (!j.contains("tokens_per_s")) continue;
      ++steps;
      if (j.contains("routing") && j["routing"].contains("dropped_share")) sum += j["routing"]["dropped_share"].get<double>();
    }
    ASSERT_EQ(steps, 6);
    const json r = json::parse(std::ifstream(dir + "/exp/results/capacity.json"));
    EXPECT_GT(sum, 0.0) << "a capacity factor of 1 on a tiny model drops slots";
    EXPECT_NEAR(r.at("train_dropped_share").get<double>(), sum / steps, 1e-12);
    EXPECT_NE(first.find("- capacity: capacity_factor 1.0, tau 0.5; capacity factor 1 dropped "), std::string::npos)
        << first;
    EXPECT_FALSE(json::parse(std::ifstream(dir + "/exp/results/moepp.json")).contains("train_dropped_share"));
  }
  if (gemm_bf16_available()) {
    EXPECT_NE(first.find("| moepp-bf16 | "), std::string::npos) << first;
    const json st = json::parse(std::ifstream(dir + "/exp/runs/moepp-bf16/trainer_state.json"));
    EXPECT_EQ(st.at("precision"), "bf16");
  }
  struct stat a, b;
  ASSERT_EQ(::stat((dir + "/exp/runs/vanilla/model.safetensors").c_str(), &a), 0);
  const std::string second = run_experiment(o);
  ASSERT_EQ(::stat((dir + "/exp/runs/vanilla/model.safetensors").c_str(), &b), 0);
  EXPECT_EQ(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec) << "a finished run is not trained again";
  EXPECT_EQ(first, second) << "the report of finished runs comes from their stored results";

  // Retiming replaces the stored forward times of finished runs with interleaved medians
  // and says so in the report; the plan is kept beside the results for `moepp analyze`.
  o.retime_rounds = 3;
  const std::string third = run_experiment(o);
  EXPECT_NE(third.find("median of 3 interleaved retiming rounds (baseline: vanilla)"), std::string::npos) << third;
  const json v = json::parse(std::ifstream(dir + "/exp/results/vanilla.json"));
  EXPECT_EQ(v.at("moe_forward_timing"), "median of 3 interleaved retiming rounds");
  EXPECT_GT(v.at("moe_forward_s").get<double>(), 0.0);
  EXPECT_EQ(json::parse(std::ifstream(dir + "/exp/plan.json")), with_bf16);
}
