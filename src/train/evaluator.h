// Evaluation: mean next-token loss, perplexity and routing statistics over windows of a
// token array, in order (no shuffling), so the same model and data give the same numbers.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/collectives.h"
#include "model/config.h"
#include "model/params.h"
#include "moe/routing_stats.h"

namespace moepp {

struct EvalResult {
  double loss = 0, perplexity = 0, balance_loss = 0;
  int64_t tokens = 0;
  std::vector<RoutingStats> routing;  // per MoE layer, pooled over batches
  std::vector<double> batch_losses;   // each batch's mean cross-entropy, in order (for paired comparisons)
  nlohmann::json to_json() const;
};

// Evaluates up to max_batches batches of B windows of S+1 tokens (0 = all windows).
// With comm (a multi-process run), each batch's windows are split evenly over the ranks and
// the result is the whole batch's, the same on every rank; a last batch of fewer windows
// that the ranks cannot share evenly is cut to a multiple of the rank count (at most size-1 windows left out).
EvalResult evaluate(const ModelConfig& cfg, const ModelParams<float>& params, const std::vector<int32_t>& tokens,
                    int64_t B, int64_t S, int64_t max_batches, Collectives* comm = nullptr);

}  // namespace moepp
