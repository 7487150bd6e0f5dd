// Experiments (`moepp experiment --plan PLAN.json`): a list of training runs, each a
// variant of one base configuration, on the same data, tokens and seed. Runs are
// resumable (a finished run is skipped, a stopped one resumed); a failed run is recorded
// with its error, never dropped. Each finished run is evaluated and its MoE layers' forward
// pass timed; the report is built from those result files alone.
#pragma once
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moepp {

struct ExperimentOptions {
  std::string plan_path, data_dir, out_dir;
  int eval_batches = 0;  // 0: the plan's value (default 16)
  bool quiet = false;
  // After training, time every finished run's MoE layers again in this many rounds that
  // alternate between runs (0: keep the timing taken when each run finished).
  int retime_rounds = 0;
  // Passed to every run's TrainOptions::stop: once set, the running run writes a
  // checkpoint and the experiment stops with an error (the same command continues it).
  const std::atomic<bool>* stop = nullptr;
};

// Refuses a plan whose "runs" list is missing or empty, or whose runs lack a plain,
// unique "name" (where names the plan in the message).
void check_plan_runs(const nlohmann::json& plan, const std::string& where);

// Runs (or skips) every run of the plan; writes OUT/results/<name>.json and OUT/report.md.
// Returns the report text.
std::string run_experiment(const ExperimentOptions& opt);

// The markdown report of a plan from its result objects (one per run, in plan order; a
// failed run has "status": "failed" and "error"). Pure: no files, no clocks.
std::string experiment_report(const nlohmann::json& plan, const std::vector<nlohmann::json>& results);

}  // namespace moepp
