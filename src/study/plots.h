// Plots of a routing analysis and of an experiment's tau sweep (study/gnuplot.h draws
// them). Training curves are in study/training_plots.h.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "study/gnuplot.h"

namespace moepp {

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
