// Plots for reports, drawn by gnuplot (Debian's gnuplot-nox). Each plot is written as its
// data (NAME.tsv) and script (NAME.gp) next to the PNG, so a figure can be redrawn or
// restyled without rerunning anything; without gnuplot the data and scripts are still
// written and the caller is told no PNG was made.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moepp {

// Paths of the PNGs drawn (empty when gnuplot is missing), in the order written.
struct PlotResult {
  std::vector<std::string> written;  // the .gp scripts
  std::vector<std::string> pngs;
};

// From `moepp analyze`'s JSON: FFN experts per token across the sample text, and the share
// of slots per expert kind in each MoE layer.
PlotResult plot_analysis(const nlohmann::json& analysis, const std::string& dir);

// From an experiment's plan and results: tau vs expert-layer forward speed-up over vanilla,
// and tau vs validation loss (vanilla drawn as a line). The tau sweep is the plan's runs
// that set nothing but "tau" (and "name"); the vanilla baseline is its run with
// "vanilla": true and no other field.
PlotResult plot_experiment(const nlohmann::json& plan, const std::vector<nlohmann::json>& results,
                           const std::string& dir);

}  // namespace moepp
