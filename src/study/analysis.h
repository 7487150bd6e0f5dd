// Routing analysis of a trained model on a text (`moepp analyze`): for every token and MoE
// layer, how many of its top-k experts were FFN experts (the MoE++ paper's measure of work
// per token); which tokens and which frequency bands use the fewest and the most FFNs; the
// share of slots per expert kind in each layer; and the variance of the routing scores
// (softmax probabilities p) with the gating residual and with its term removed.
//
// Variances, per MoE layer over the analysed tokens t and experts e (docs/decisions.md):
//   across_tokens  = mean_e Var_t p[t,e]  - how much an expert's score moves between tokens
//   across_experts = mean_t Var_e p[t,e]  - how peaked each token's routing is
// "Without residual" recomputes the same layer's router on the same input with z_prev
// omitted, so it isolates the residual term of one trained model; training without
// gating residuals at all is the plan's ablation run, analysed the same way.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/collectives.h"
#include "model/config.h"
#include "model/params.h"
#include "moe/routing_stats.h"

namespace moepp {

struct AnalysisOptions {
  int64_t seq = 256;            // tokens per sequence fed to the model
  int64_t batch = 8;            // sequences per forward
  int64_t max_tokens = 50000;   // analyse at most this many tokens of the text
  int64_t min_count = 5;        // a token string is ranked only if it occurs this often
  int64_t list = 15;            // how many fewest/most-FFN tokens to list
  int64_t sample_tokens = 40;   // tokens of the per-token picture (from the text's start)
};

struct ScoreVariance {
  double across_tokens = 0, across_experts = 0;
};

struct RoutingAnalysis {
  int top_k = 0, num_ffn = 0;
  std::vector<int> moe_layers;         // model layer index of each MoE layer
  std::vector<int32_t> ids;            // the analysed tokens
  std::vector<uint8_t> ffn_count;      // [tokens, MoE layers]: FFN experts among the top-k
  std::vector<RoutingStats> layer_stats;
  std::vector<ScoreVariance> with_residual;
  std::vector<ScoreVariance> without_residual;  // only where the layer had a gating residual
  std::vector<bool> has_residual;

  double ffn_mean(size_t token) const;  // over MoE layers
};

// Runs the model over ids (in sequences of opt.seq) and collects the routing. With comm (a
// multi-process run), rank r forwards the batches r, r + N, ... of the same cut and every
// rank returns the whole analysis, equal to one process's.
RoutingAnalysis analyze_routing(const ModelConfig& cfg, const ModelParams<float>& w, const std::vector<int32_t>& ids,
                                const AnalysisOptions& opt, Collectives* comm = nullptr);

// The analysis as JSON; piece(id) names tokens.
nlohmann::json analysis_json(const RoutingAnalysis& a, const std::function<std::string(int32_t)>& piece,
                             const AnalysisOptions& opt);

}  // namespace moepp
