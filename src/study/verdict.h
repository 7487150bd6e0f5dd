// The verdict of a MoE++ run against its vanilla twin (same FFN experts, data, steps and
// seed), in numbers and in words: the validation-loss difference with its noise, the FFN
// compute MoE++ spent per token relative to vanilla, and the training-speed ratio.
//
// The noise is the standard error of the paired per-batch difference: both models are
// evaluated on the same validation batches, so batch difficulty cancels and what is left
// is how much the difference varies from batch to batch. It measures evaluation noise
// only; the spread between training seeds is larger and needs several seeds
// (`moepp experiment`).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moepp {

struct PairedDifference {
  double mean = 0;        // mean over batches of a[i] - b[i]
  double std_error = 0;   // sample standard deviation of the differences / sqrt(n); 0 for n < 2
  int64_t pairs = 0;
};
PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b);

struct TwinVerdict {
  std::string moepp_run, vanilla_run;
  double moepp_loss = 0, vanilla_loss = 0;  // over the whole evaluated split
  PairedDifference loss_difference;         // MoE++ minus vanilla, per batch
  int64_t val_tokens = 0;
  double moepp_ffn_per_token = 0, vanilla_ffn_per_token = 0;
  double moepp_tokens_per_s = 0, vanilla_tokens_per_s = 0;  // training medians; 0: unknown
  int top_k = 0;

  double ffn_compute_share() const { return moepp_ffn_per_token / vanilla_ffn_per_token; }
  double speed_ratio() const;  // NaN when a speed is unknown
  // "better", "worse" or "the same" (within two standard errors of the difference);
  // "undetermined" with fewer than two batches (no noise estimate)
  std::string quality_word() const;
  std::string text() const;  // a few plain sentences, every figure labelled
  nlohmann::json to_json() const;
};

}  // namespace moepp
