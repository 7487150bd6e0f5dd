#include "study/analysis.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "model/transformer.h"
#include "moe/router.h"
#include "train/replicas.h"

namespace moepp {

using json = nlohmann::json;

double RoutingAnalysis::ffn_mean(size_t token) const {
  const size_t L = moe_layers.size();
  if (L == 0) return 0.0;
  double s = 0;
  for (size_t m = 0; m < L; ++m) s += ffn_count[token * L + m];
  return s / double(L);
}

namespace {

// Running sums for the two score variances of one layer.
struct VarianceSums {
  std::vector<double> sum, sumsq;  // per expert, over tokens
  double across_experts = 0;       // sum over tokens of Var_e p
  int64_t tokens = 0;

  void add(const float* p, int64_t n, int E) {
    if (sum.empty()) sum.assign(size_t(E), 0.0), sumsq.assign(size_t(E), 0.0);
    for (int64_t t = 0; t < n; ++t) {
      const float* pt = p + t * E;
      double m = 0, m2 = 0;
      for (int e = 0; e < E; ++e) {
        sum[size_t(e)] += pt[e];
        sumsq[size_t(e)] += double(pt[e]) * pt[e];
        m += pt[e];
        m2 += double(pt[e]) * pt[e];
      }
      m /= E;
      across_experts += m2 / E - m * m;
    }
    tokens += n;
  }
  // Pools the sums of every rank (a rank that saw no tokens holds none yet).
  void sum_over(Collectives& comm, int E) {
    if (sum.empty()) sum.assign(size_t(E), 0.0), sumsq.assign(size_t(E), 0.0);
    std::vector<double> v(sum);
    v.insert(v.end(), sumsq.begin(), sumsq.end());
    v.push_back(across_experts);
    v.push_back(double(tokens));
    comm.sum_all(v.data(), int64_t(v.size()));
    std::copy(v.begin(), v.begin() + E, sum.begin());
    std::copy(v.begin() + E, v.begin() + 2 * E, sumsq.begin());
    across_experts = v[size_t(2 * E)];
    tokens = int64_t(v[size_t(2 * E) + 1]);
  }
  ScoreVariance result() const {
    ScoreVariance v;
    if (tokens == 0) return v;
    for (size_t e = 0; e < sum.size(); ++e) {
      const double m = sum[e] / double(tokens);
      v.across_tokens += sumsq[e] / double(tokens) - m * m;
    }
    v.across_tokens /= double(sum.size());
    v.across_experts = across_experts / double(tokens);
    return v;
  }
};

json variance_json(const ScoreVariance& v) {
  return {{"across_tokens", v.across_tokens}, {"across_experts", v.across_experts}};
}

}  // namespace

RoutingAnalysis analyze_routing(const ModelConfig& cfg, const ModelParams<float>& w, const std::vector<int32_t>& ids_in,
                                const AnalysisOptions& opt, Collectives* comm) {
  MOEPP_CHECK(opt.seq > 0 && opt.batch > 0, "analyze: seq and batch must be positive, got ", opt.seq, " and ", opt.batch);
  MOEPP_CHECK(!ids_in.empty(), "analyze: no tokens to analyse (empty text?)");
  for (int32_t id : ids_in)
    MOEPP_CHECK(id >= 0 && id < cfg.vocab_size, "analyze: token id ", id, " outside the model's vocabulary of ",
                cfg.vocab_size);
  const MoeConfig mc = cfg.layer_moe();
  RoutingAnalysis a;
  a.top_k = mc.top_k;
  a.num_ffn = mc.num_ffn;
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.is_moe_layer(l)) a.moe_layers.push_back(l);
  const size_t L = a.moe_layers.size();
  MOEPP_CHECK(L > 0, "analyze: the model has no MoE layer");
  const int64_t n = std::min<int64_t>(int64_t(ids_in.size()), opt.max_tokens > 0 ? opt.max_tokens : INT64_MAX);
  a.ids.assign(ids_in.begin(), ids_in.begin() + n);
  a.ffn_count.assign(size_t(n) * L, 0);
  a.layer_stats.assign(L, RoutingStats{});
  a.has_residual.assign(L, false);
  std::vector<VarianceSums> with(L), without(L);
  const int E = mc.num_experts();

  ModelCache<float> cache;
  RouterCache<float> bare;
  const int64_t ranks = comm ? comm->size() : 1, me = comm ? comm->rank() : 0;
  for (int64_t start = 0, batch = 0; start < n; ++batch) {
    // Full sequences in batches; the tail as one shorter sequence.
    const int64_t full = (n - start) / opt.seq;
    const int64_t B = full > 0 ? std::min(full, opt.batch) : 1;
    const int64_t S = full > 0 ? opt.seq : n - start;
    const int64_t T = B * S;
    if (batch % ranks != me) {
      start += T;
      continue;
    }
    model_forward(cfg, w, a.ids.data() + start, B, S, cache);
    const auto stats = routing_stats_of(cfg, cache);
    for (size_t m = 0; m < L; ++m) {
      const auto& lc = cache.layers[size_t(a.moe_layers[m])];
      const auto& rc = lc.moe.router;
      a.layer_stats[m].add(stats[m]);
      for (int64_t t = 0; t < T; ++t) {
        int c = 0;
        for (int j = 0; j < mc.top_k; ++j) c += rc.idx[size_t(t * mc.top_k + j)] < mc.num_ffn;
        a.ffn_count[size_t(start + t) * L + m] = uint8_t(c);
      }
      with[m].add(rc.p.data(), T, E);
      if (lc.z_from >= 0) {
        a.has_residual[m] = true;
        router_forward(mc, w.layers[size_t(a.moe_layers[m])].moe, lc.b.data(), T, static_cast<const float*>(nullptr), bare);
        without[m].add(bare.p.data(), T, E);
      }
    }
    start += T;
  }
  if (comm) {
    sum_routing(a.layer_stats, *comm);
    // Each token's counts come from the one rank that forwarded it (the rest hold 0).
    std::vector<double> counts(a.ffn_count.begin(), a.ffn_count.end());
    comm->sum_all(counts.data(), int64_t(counts.size()));
    for (size_t i = 0; i < counts.size(); ++i) a.ffn_count[i] = uint8_t(counts[i]);
    for (size_t m = 0; m < L; ++m) {
      with[m].sum_over(*comm, E);
      without[m].sum_over(*comm, E);
      double any = a.has_residual[m] ? 1.0 : 0.0;
      comm->sum_all(&any, 1);
      a.has_residual[m] = any > 0;
    }
  }
  for (size_t m = 0; m < L; ++m) {
    a.with_residual.push_back(with[m].result());
    a.without_residual.push_back(without[m].result());
  }
  return a;
}

json analysis_json(const RoutingAnalysis& a, const std::function<std::string(int32_t)>& piece,
                   const AnalysisOptions& opt) {
  const size_t L = a.moe_layers.size();
  const size_t n = a.ids.size();
  json j;
  j["tokens"] = n;
  j["top_k"] = a.top_k;
  j["num_ffn_experts"] = a.num_ffn;
  RoutingStats all;
  for (const auto& s : a.layer_stats) all.add(s);
  j["ffn_experts_per_token"] = all.ffn_experts_per_token();
  j["ffn_flops_vs_vanilla"] = all.ffn_flops_vs_vanilla();

  // Per layer: FFN experts per token, how many tokens used 0..k FFNs, slot shares, variances.
  json layers = json::array();
  for (size_t m = 0; m < L; ++m) {
    std::vector<int64_t> hist(size_t(a.top_k) + 1, 0);
    for (size_t t = 0; t < n; ++t) ++hist[a.ffn_count[t * L + m]];
    json h = json::array();
    for (auto c : hist) h.push_back(double(c) / double(n));
    const auto& s = a.layer_stats[m];
    json layer = {{"layer", a.moe_layers[m]},
                  {"ffn_experts_per_token", s.ffn_experts_per_token()},
                  {"tokens_by_ffn_count", h},
                  {"share",
                   {{"ffn", s.share(ExpertKind::ffn)},
                    {"constant", s.share(ExpertKind::constant)},
                    {"copy", s.share(ExpertKind::copy)},
                    {"zero", s.share(ExpertKind::zero)}}},
                  {"score_variance", variance_json(a.with_residual[m])}};
    layer["score_variance_without_residual"] =
        a.has_residual[m] ? variance_json(a.without_residual[m]) : json(nullptr);
    layers.push_back(layer);
  }
  j["layers"] = layers;

  // Per token id: occurrences and mean FFN experts (over occurrences and layers).
  std::map<int32_t, std::pair<int64_t, double>> by_id;
  for (size_t t = 0; t < n; ++t) {
    auto& e = by_id[a.ids[t]];
    ++e.first;
    e.second += a.ffn_mean(t);
  }
  struct Row {
    int32_t id;
    int64_t count;
    double ffn;
  };
  std::vector<Row> rows;
  for (const auto& [id, e] : by_id) rows.push_back({id, e.first, e.second / double(e.first)});
  auto row_json = [&](const Row& r) {
    return json{{"piece", piece(r.id)}, {"id", r.id}, {"count", r.count}, {"ffn_experts", r.ffn}};
  };
  std::vector<Row> ranked;
  for (const auto& r : rows)
    if (r.count >= opt.min_count) ranked.push_back(r);
  std::sort(ranked.begin(), ranked.end(), [](const Row& x, const Row& y) {
    return x.ffn != y.ffn ? x.ffn < y.ffn : x.count != y.count ? x.count > y.count : x.id < y.id;
  });
  const size_t list = std::min(ranked.size(), size_t(std::max<int64_t>(opt.list, 0)));
  json fewest = json::array(), most = json::array();
  for (size_t i = 0; i < list; ++i) fewest.push_back(row_json(ranked[i]));
  for (size_t i = 0; i < list; ++i) most.push_back(row_json(ranked[ranked.size() - 1 - i]));
  j["fewest_ffn_tokens"] = fewest;
  j["most_ffn_tokens"] = most;

  // Frequency bands: token types ranked by how often they occur in this text.
  std::sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) {
    return x.count != y.count ? x.count > y.count : x.id < y.id;
  });
  json bands = json::array();
  const size_t edges[] = {0, 10, 100, 1000, SIZE_MAX};
  for (size_t b = 0; b + 1 < std::size(edges); ++b) {
    const size_t lo = edges[b], hi = std::min(edges[b + 1], rows.size());
    if (lo >= hi) break;
    int64_t occ = 0;
    double ffn = 0;
    for (size_t i = lo; i < hi; ++i) occ += rows[i].count, ffn += rows[i].ffn * double(rows[i].count);
    const std::string name = "ranks " + std::to_string(lo + 1) + "-" +
                             (edges[b + 1] == SIZE_MAX ? std::string("") : std::to_string(edges[b + 1]));
    bands.push_back({{"band", name}, {"types", hi - lo}, {"occurrences", occ}, {"ffn_experts", ffn / double(occ)}});
  }
  j["frequency_bands"] = bands;

  json sample = json::array();
  for (size_t t = 0; t < std::min(n, size_t(std::max<int64_t>(opt.sample_tokens, 0))); ++t) {
    json per = json::array();
    for (size_t m = 0; m < L; ++m) per.push_back(a.ffn_count[t * L + m]);
    sample.push_back({{"piece", piece(a.ids[t])}, {"id", a.ids[t]}, {"ffn_per_layer", per}, {"ffn_experts", a.ffn_mean(t)}});
  }
  j["sample"] = sample;
  return j;
}

}  // namespace moepp
