// Training curves of one or more runs (`moepp plot RUN... --out DIR`), drawn by gnuplot:
// training and validation loss against tokens seen, learning rate, gradient norm, FFN
// experts per token, the share of routing slots per expert kind, and FFN experts per token
// per MoE layer for MoE++ runs; several runs are overlaid with a legend naming each.
//
// The data files hold the numbers of metrics.jsonl exactly as logged (each value written
// in the shortest form that reads back to the same double), one per run:
//   runI.steps.tsv  step, tokens, loss, lm_loss, balance_loss, lr, grad_norm, tokens_per_s,
//                   ffn_experts_per_token, share_ffn, share_zero, share_copy,
//                   share_constant, then ffn_experts_per_token of each MoE layer
//   runI.val.tsv    step, tokens, val_loss, val_perplexity
// with "NaN" where a line lacks the field (gnuplot leaves such points out).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "study/gnuplot.h"

namespace moepp {

struct TrainingRunCurves {
  std::string name;             // the legend's name for the run
  std::string description;      // for titles: model, preset, experts, parameters
  int64_t tokens_per_step = 0;  // batch x seq x accum; 0: the loss is drawn against steps
  int top_k = 0;                // the FFN-experts-per-token plot marks k (vanilla's count)
  bool zero_computation = false;  // draw the per-layer plot (a vanilla run's is flat at k)
  std::vector<nlohmann::json> metrics;  // metrics.jsonl, line by line
};

PlotResult plot_training_runs(const std::vector<TrainingRunCurves>& runs, const std::string& dir);

}  // namespace moepp
