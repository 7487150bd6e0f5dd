// moepp experiment: train every run of a plan (resumably), evaluate each, write a report.
#include <cstdio>

#include "cli/commands.h"
#include "study/experiment.h"

namespace moepp::cli {

void add_experiment(CLI::App& app) {
  auto* cmd = app.add_subcommand("experiment",
                                 "Train a plan's runs on the same data (finished runs are skipped, stopped ones "
                                 "resumed) and write OUT/report.md");
  auto o = std::make_shared<ExperimentOptions>();
  auto threads = std::make_shared<int>(0);
  cmd->add_option("--plan", o->plan_path, "Plan JSON: {\"name\", \"base\": {...}, \"runs\": [{\"name\", ...}]}")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--data", o->data_dir, "Prepared data folder")->required();
  cmd->add_option("--out", o->out_dir, "Experiment folder (runs/, results/, report.md)")->required();
  cmd->add_option("--eval-batches", o->eval_batches, "Validation batches per run (0: the plan's)")
      ->default_val(0)
      ->check(non_negative_number());
  cmd->add_option("--retime", o->retime_rounds,
                  "Re-time every finished run's MoE-layer forward in N rounds alternating between runs, keep the "
                  "medians (use on a quiet machine; 0: keep the timing taken when each run finished)")
      ->default_val(0)
      ->check(non_negative_number());
  add_threads_option(cmd, threads.get());
  cmd->callback([o, threads] {
    apply_threads(*threads);
    std::string report;
    {
      const StopOnSignals signals;  // Ctrl-C: the running run checkpoints, the experiment stops
      o->stop = signals.flag();
      report = run_experiment(*o);
    }
    std::printf("%s", report.c_str());
  });
}

}  // namespace moepp::cli
