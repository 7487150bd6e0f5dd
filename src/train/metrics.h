// Routing statistics and training metrics as JSON (SPEC §5), and the JSONL metrics log.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/routing_stats.h"

namespace moepp {

// {"ffn_experts_per_token", "ffn_flops_vs_vanilla", "share": {ffn, zero, copy, constant},
//  "ffn_load_max_over_mean", "layers": [per-layer ffn_experts_per_token and shares]}
nlohmann::json routing_json(const std::vector<RoutingStats>& per_layer);

// Appends one line to a JSONL file (open, append, flush, close).
void append_jsonl(const std::string& path, const nlohmann::json& line);

// Every line of RUN/metrics.jsonl, in order. A torn last line (a crash mid-write) is
// skipped; a missing file or a bad line before the last is an error naming the file and line.
std::vector<nlohmann::json> read_metrics_log(const std::string& run_dir);

// Median tokens/s of a run's training steps (RUN/metrics.jsonl), skipping the first 10
// as warm-up; 0 when there are none.
double median_tokens_per_s(const std::string& run_dir);

// Rewrites a JSONL file keeping only the lines whose "step" is at most max_step (a resumed
// run continues the log where its checkpoint was taken).
void truncate_jsonl_after(const std::string& path, int64_t max_step);

}  // namespace moepp
