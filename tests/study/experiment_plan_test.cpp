// Experiment plans that cannot be run as written: two runs of one name (they would train
// into one folder and overwrite each other's results), a name that is not a plain folder
// name, or no runs at all, are refused by name before anything is written or trained.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "study/experiment.h"

using namespace moepp;
using namespace moepp::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

TEST(ExperimentPlan, DuplicateRunNamesAreRefusedBeforeAnythingIsWritten) {
  const std::string dir = test::scratch_dir("moepp-exp-plan");
  const json plan = {{"name", "dup"},
                     {"base", {{"preset", "tiny"}, {"vocab", 32}, {"steps", 1}}},
                     {"runs", {{{"name", "a"}}, {{"name", "b"}, {"vanilla", true}}, {{"name", "a"}, {"tau", 0.5}}}}};
  std::ofstream(dir + "/plan.json") << plan.dump();
  // No data folder at all: the plan is refused before the data is looked at.
  const ExperimentOptions o{dir + "/plan.json", dir + "/no-data", dir + "/exp", 0, true};
  expect_error_mentioning([&] { run_experiment(o); },
                          dir + "/plan.json: runs 1 and 3 are both named \"a\"; run names must be unique");
  EXPECT_FALSE(fs::exists(dir + "/exp"));
  fs::remove_all(dir);
}

TEST(ExperimentPlan, RunNamesMustBePlainUniqueStrings) {
  auto plan_with = [](json runs) { return json{{"runs", std::move(runs)}}; };
  EXPECT_NO_THROW(check_plan_runs(plan_with({{{"name", "a"}}, {{"name", "a2"}}, {{"name", "A"}}}), "p"));
  expect_error_mentioning([&] { check_plan_runs(plan_with({{{"name", "x"}}, {{"name", "x"}}}), "p"); },
                          "p: runs 1 and 2 are both named \"x\"");
  for (const char* bad : {"", ".", "..", "a/b", "../escape"})
    expect_error_mentioning([&] { check_plan_runs(plan_with({{{"name", bad}}}), "p"); },
                            std::string("run 1 has the name \"") + bad + "\"; a run name must be a plain folder name");
  expect_error_mentioning([&] { check_plan_runs(plan_with({{{"name", 3}}}), "p"); }, "p: run 1 needs a \"name\" string");
  expect_error_mentioning([&] { check_plan_runs(plan_with({{{"tau", 0.5}}}), "p"); }, "p: run 1 needs a \"name\" string");
  expect_error_mentioning([&] { check_plan_runs(plan_with({"a"}), "p"); }, "p: run 1 needs a \"name\" string");
  expect_error_mentioning([&] { check_plan_runs(plan_with(json::array()), "p"); }, "p: the plan has no \"runs\" list");
  expect_error_mentioning([&] { check_plan_runs(json{{"name", "x"}}, "p"); }, "p: the plan has no \"runs\" list");
  expect_error_mentioning([&] { check_plan_runs(json::array(), "p"); }, "p: the plan has no \"runs\" list");
}
