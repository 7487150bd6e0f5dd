#include "study/verdict.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"

namespace moepp {

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b) {
  MOEPP_CHECK(a.size() == b.size() && !a.empty(), "paired_difference: ", a.size(), " and ", b.size(),
              " values; the two evaluations must cover the same batches");
  PairedDifference d;
  d.pairs = int64_t(a.size());
  for (size_t i = 0; i < a.size(); ++i) d.mean += a[i] - b[i];
  d.mean /= double(a.size());
  if (a.size() < 2) return d;
  double ss = 0;
  for (size_t i = 0; i < a.size(); ++i) ss += (a[i] - b[i] - d.mean) * (a[i] - b[i] - d.mean);
  d.std_error = std::sqrt(ss / double(a.size() - 1) / double(a.size()));
  return d;
}

double TwinVerdict::speed_ratio() const {
  if (moepp_tokens_per_s <= 0 || vanilla_tokens_per_s <= 0) return std::numeric_limits<double>::quiet_NaN();
  return moepp_tokens_per_s / vanilla_tokens_per_s;
}

std::string TwinVerdict::quality_word() const {
  if (loss_difference.pairs < 2) return "undetermined";
  const double d = moepp_loss - vanilla_loss, noise = 2 * loss_difference.std_error;
  if (std::abs(d) <= noise) return "the same";
  return d < 0 ? "better" : "worse";
}

namespace {

template <typename... A>
std::string format(const char* f, A... a) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, a...);
  return buf;
}

}  // namespace

std::string TwinVerdict::text() const {
  const double d = moepp_loss - vanilla_loss;
  const std::string q = quality_word();
  std::string s = format("Verdict: %s (MoE++) against %s (its vanilla twin: same FFN experts, data, steps and seed)\n",
                         moepp_run.c_str(), vanilla_run.c_str());
  s += format("  Quality: validation loss %.4f against %.4f nats/token, a difference of %+.4f +/- %.4f\n", moepp_loss,
              vanilla_loss, d, loss_difference.std_error);
  s += format("    (+/- one standard error of the paired difference over %lld validation batches, %lld tokens;\n"
              "    it covers evaluation noise only, not the spread between training seeds).\n",
              (long long)loss_difference.pairs, (long long)val_tokens);
  if (q == "undetermined")
    s += "    With one validation batch there is no noise estimate: evaluate on more (compare --max-batches 0).\n";
  else if (q == "the same")
    s += "    MoE++ is as good as vanilla within that noise.\n";
  else
    s += format("    MoE++ is %s than vanilla by %.4f nats/token (%.1f standard errors).\n", q.c_str(), std::abs(d),
                loss_difference.std_error > 0 ? std::abs(d) / loss_difference.std_error : 0.0);
  s += format("  FFN compute: MoE++ ran %.2f FFN experts per token where vanilla runs %.2f (top-%d): %.0f%% of the\n"
              "    vanilla FFN compute on the validation text; the other slots went to zero-computation experts.\n",
              moepp_ffn_per_token, vanilla_ffn_per_token, top_k, 100 * ffn_compute_share());
  const double r = speed_ratio();
  if (std::isnan(r))
    s += "  Training speed: not known (a run has no training log past warm-up).\n";
  else
    s += format("  Training speed: MoE++ trained at %.2fx the vanilla tokens/s (%.0f against %.0f; medians of each\n"
                "    run's logged steps after the first 10, measured in this job on this machine).\n",
                r, moepp_tokens_per_s, vanilla_tokens_per_s);
  return s;
}

nlohmann::json TwinVerdict::to_json() const {
  const double r = speed_ratio();
  return {{"moepp_run", moepp_run},
          {"vanilla_run", vanilla_run},
          {"val_loss_moepp", moepp_loss},
          {"val_loss_vanilla", vanilla_loss},
          {"val_loss_difference", moepp_loss - vanilla_loss},
          {"val_loss_difference_std_error", loss_difference.std_error},
          {"val_batches", loss_difference.pairs},
          {"val_tokens", val_tokens},
          {"quality", quality_word()},
          {"ffn_compute_share", ffn_compute_share()},
          {"training_speed_ratio", std::isnan(r) ? nlohmann::json(nullptr) : nlohmann::json(r)}};
}

}  // namespace moepp
