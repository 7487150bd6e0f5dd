#include "train/evaluator.h"

#include <cmath>

#include "core/error.h"
#include "model/transformer.h"
#include "train/replicas.h"
#include "train/metrics.h"

namespace moepp {

nlohmann::json EvalResult::to_json() const {
  return {{"loss", loss}, {"perplexity", perplexity}, {"balance_loss", balance_loss}, {"tokens", tokens},
          {"routing", routing_json(routing)}};
}

EvalResult evaluate(const ModelConfig& cfg, const ModelParams<float>& params, const std::vector<int32_t>& tokens,
                    int64_t B, int64_t S, int64_t max_batches, Collectives* comm) {
  MOEPP_CHECK(B >= 1 && S >= 1, "evaluate: batch ", B, " and sequence ", S, " must be at least 1");
  const int64_t windows = (int64_t(tokens.size()) - 1) / S;
  MOEPP_CHECK(windows >= 1, "evaluate: ", tokens.size(), " tokens are too few for one window of ", S + 1);
  for (int32_t t : tokens)
    MOEPP_CHECK(t >= 0 && t < cfg.vocab_size, "evaluate: token id ", t, " is outside the model's vocabulary of ",
                cfg.vocab_size);
  EvalResult r;
  ModelCache<float> cache;
  cache.comm = comm;
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  double loss_sum = 0, bal_sum = 0;
  int64_t batches = 0;
  std::vector<int32_t> ids, targets;
  for (int64_t w0 = 0; w0 < windows; w0 += B) {
    if (max_batches > 0 && batches >= max_batches) break;
    const int64_t all = std::min(B, windows - w0) / ranks * ranks;  // the windows of this batch
    if (all == 0) break;
    const int64_t b = all / ranks, first = w0 + rank * b;  // this rank's share
    ids.resize(size_t(b * S));
    targets.resize(size_t(b * S));
    for (int64_t i = 0; i < b; ++i)
      for (int64_t s = 0; s < S; ++s) {
        ids[size_t(i * S + s)] = tokens[size_t((first + i) * S + s)];
        targets[size_t(i * S + s)] = tokens[size_t((first + i) * S + s + 1)];
      }
    model_forward(cfg, params, ids.data(), b, S, cache);
    const LossParts p = model_loss(cfg, cache, targets.data());
    double lm = p.lm_loss / double(ranks);  // equal shares: the batch's mean is the ranks' mean
    if (comm) comm->sum_all(&lm, 1);
    loss_sum += lm * double(all * S);
    r.batch_losses.push_back(lm);
    bal_sum += p.balance_loss * double(all * S);  // already the whole batch's
    r.tokens += all * S;
    auto stats = routing_stats_of(cfg, cache);
    if (comm) sum_routing(stats, *comm);
    if (r.routing.empty()) r.routing = stats;
    else
      for (size_t l = 0; l < stats.size(); ++l) r.routing[l].add(stats[l]);
    ++batches;
  }
  r.loss = loss_sum / double(r.tokens);
  r.balance_loss = bal_sum / double(r.tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace moepp
