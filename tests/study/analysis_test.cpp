// `moepp analyze` on a hand-built model whose router weights fix every routing decision:
// one-hot embeddings, attention and FFN outputs zeroed, so each MoE layer's router sees
// rms(e_i) = 2 e_i and picks the top-2 of column i of its weight matrix. The counts,
// shares, rankings and bands the analysis reports must be the ones those columns imply;
// the score variances must match a naive double computation of the same softmaxes.
#include "study/analysis.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace moepp;

namespace {

constexpr int V = 4, D = 4, E = 4;  // experts: 0, 1 FFN; 2 copy; 3 zero

// Router logit columns per token (before the factor 2 of the RMS-normalised one-hot input).
// Layer 1: token 0 -> {FFN0, FFN1}, 1 -> {copy, zero}, 2 -> {FFN0, copy}, 3 -> {FFN1, zero}.
const double kLayer1[V][E] = {{3, 2, 0, -1}, {0, -1, 3, 2}, {3, 0, 2, -1}, {-1, 3, 0, 2}};
// Layer 2: token 0 -> {FFN0, FFN1}, 1 -> {FFN0, copy}, 2 -> {copy, zero}, 3 -> {FFN1, FFN0}.
const double kLayer2[V][E] = {{3, 2, 0, -1}, {3, -1, 2, 0}, {0, -1, 3, 2}, {2, 3, 0, -1}};
const int kFfn1[V] = {2, 0, 1, 1}, kFfn2[V] = {2, 1, 0, 2};

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = V;
  c.hidden_size = D;
  c.intermediate_size = 4;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 1;
  c.num_key_value_heads = 1;
  c.moe.num_ffn = E - 2;  // E experts: FFNs, a copy and a zero expert
  c.moe.num_constant = 0;
  c.moe.num_copy = 1;
  c.moe.num_zero = 1;
  c.moe.top_k = 2;
  c.moe.two_layer_router = false;
  c.validate();
  return c;
}

ModelParams<float> hand_set(const ModelConfig& c) {
  auto w = ModelParams<float>::zeros(c);
  for (int i = 0; i < V; ++i) w.embed[i * D + i] = 1.0f;
  for (size_t d = 0; d < size_t(D); ++d) w.final_norm[d] = 1.0f;
  for (int l = 0; l < 2; ++l) {
    auto& L = w.layers[size_t(l)];
    for (size_t d = 0; d < size_t(D); ++d) L.input_norm[d] = L.post_norm[d] = 1.0f;
    for (int e = 0; e < E; ++e)
      for (int i = 0; i < V; ++i) L.moe.wg[e * D + i] = float(l == 0 ? kLayer1[i][e] : kLayer2[i][e]);
  }
  return w;
}

// Population variances of softmax(2 * column) over the token sequence, in double.
ScoreVariance naive_variance(const std::vector<int32_t>& ids, const double (*cols)[E], const double* extra = nullptr,
                             const double (*prev)[E] = nullptr) {
  std::vector<std::array<double, E>> p;
  for (int32_t id : ids) {
    std::array<double, E> z{}, q{};
    for (int e = 0; e < E; ++e) {
      z[size_t(e)] = 2 * cols[id][e];
      if (extra)  // gating residual: + G z_prev with G = diag(extra)
        z[size_t(e)] += extra[e] * 2 * prev[id][e];
    }
    double mx = *std::max_element(z.begin(), z.end()), s = 0;
    for (int e = 0; e < E; ++e) s += q[size_t(e)] = std::exp(z[size_t(e)] - mx);
    for (auto& v : q) v /= s;
    p.push_back(q);
  }
  ScoreVariance v;
  const double n = double(ids.size());
  for (int e = 0; e < E; ++e) {
    double m = 0, m2 = 0;
    for (const auto& q : p) m += q[size_t(e)], m2 += q[size_t(e)] * q[size_t(e)];
    v.across_tokens += (m2 / n - (m / n) * (m / n)) / E;
  }
  for (const auto& q : p) {
    double m = 0, m2 = 0;
    for (double x : q) m += x, m2 += x * x;
    v.across_experts += (m2 / E - (m / E) * (m / E)) / n;
  }
  return v;
}

// Token 0 six times, 1 five times, 2 three times, 3 twice.
const std::vector<int32_t> kIds = {0, 1, 0, 2, 1, 0, 3, 1, 0, 2, 1, 0, 3, 0, 1, 2};

}  // namespace

TEST(Analyze, ReportsTheFfnCountsTheRouterWeightsImply) {
  const ModelConfig c = tiny_config();
  const auto w = hand_set(c);
  AnalysisOptions opt;
  opt.seq = 5;  // two full sequences in one batch, one more, then a 1-token tail
  opt.batch = 2;
  opt.min_count = 1;
  opt.list = 2;
  opt.sample_tokens = 4;
  const RoutingAnalysis a = analyze_routing(c, w, kIds, opt);
  ASSERT_EQ(a.moe_layers, (std::vector<int>{0, 1}));
  ASSERT_EQ(a.ids.size(), kIds.size());
  for (size_t t = 0; t < kIds.size(); ++t) {
    EXPECT_EQ(a.ffn_count[t * 2 + 0], kFfn1[kIds[t]]) << "token " << t << " layer 0";
    EXPECT_EQ(a.ffn_count[t * 2 + 1], kFfn2[kIds[t]]) << "token " << t << " layer 1";
  }
  const auto j = analysis_json(a, [](int32_t id) { return "tok" + std::to_string(id); }, opt);
  // Layer 0: FFN slots 6*2 + 5*0 + 3*1 + 2*1 = 17, copy 5 + 3 = 8, zero 5 + 2 = 7 of 32.
  EXPECT_DOUBLE_EQ(j["layers"][0]["ffn_experts_per_token"].get<double>(), 17.0 / 16);
  EXPECT_DOUBLE_EQ(j["layers"][0]["share"]["copy"].get<double>(), 8.0 / 32);
  EXPECT_DOUBLE_EQ(j["layers"][0]["share"]["zero"].get<double>(), 7.0 / 32);
  // Layer 1: 6*2 + 5*1 + 3*0 + 2*2 = 21 FFN slots; tokens with 0/1/2 FFNs: 3, 5, 8 of 16.
  EXPECT_DOUBLE_EQ(j["layers"][1]["ffn_experts_per_token"].get<double>(), 21.0 / 16);
  EXPECT_DOUBLE_EQ(j["layers"][1]["tokens_by_ffn_count"][0].get<double>(), 3.0 / 16);
  EXPECT_DOUBLE_EQ(j["layers"][1]["tokens_by_ffn_count"][1].get<double>(), 5.0 / 16);
  EXPECT_DOUBLE_EQ(j["layers"][1]["tokens_by_ffn_count"][2].get<double>(), 8.0 / 16);
  EXPECT_DOUBLE_EQ(j["ffn_experts_per_token"].get<double>(), 38.0 / 32);
  // Per token id (mean over layers): 0 -> 2, 1 -> 0.5, 2 -> 0.5, 3 -> 1.5; ties by frequency.
  EXPECT_EQ(j["fewest_ffn_tokens"][0]["piece"], "tok1");
  EXPECT_EQ(j["fewest_ffn_tokens"][1]["piece"], "tok2");
  EXPECT_DOUBLE_EQ(j["fewest_ffn_tokens"][0]["ffn_experts"].get<double>(), 0.5);
  EXPECT_EQ(j["most_ffn_tokens"][0]["piece"], "tok0");
  EXPECT_EQ(j["most_ffn_tokens"][1]["piece"], "tok3");
  EXPECT_DOUBLE_EQ(j["most_ffn_tokens"][1]["ffn_experts"].get<double>(), 1.5);
  EXPECT_EQ(j["most_ffn_tokens"][0]["count"], 6);
  ASSERT_EQ(j["frequency_bands"].size(), 1u);
  EXPECT_EQ(j["frequency_bands"][0]["types"], 4);
  EXPECT_DOUBLE_EQ(j["frequency_bands"][0]["ffn_experts"].get<double>(), 19.0 / 16);
  EXPECT_EQ(j["sample"].size(), 4u);
  EXPECT_EQ(j["sample"][2]["ffn_per_layer"], nlohmann::json({2, 2}));
  // Variances: the gate map is zero, so the residual term changes nothing in layer 1, and
  // layer 0 has no earlier layer to take a residual from.
  const ScoreVariance v0 = naive_variance(kIds, kLayer1), v1 = naive_variance(kIds, kLayer2);
  EXPECT_NEAR(a.with_residual[0].across_tokens, v0.across_tokens, 1e-6);
  EXPECT_NEAR(a.with_residual[0].across_experts, v0.across_experts, 1e-6);
  EXPECT_NEAR(a.with_residual[1].across_tokens, v1.across_tokens, 1e-6);
  EXPECT_NEAR(a.without_residual[1].across_experts, v1.across_experts, 1e-6);
  EXPECT_FALSE(a.has_residual[0]);
  EXPECT_TRUE(a.has_residual[1]);
  EXPECT_TRUE(j["layers"][0]["score_variance_without_residual"].is_null());
}

TEST(Analyze, SeparatesTheGatingResidualTerm) {
  const ModelConfig c = tiny_config();
  auto w = hand_set(c);
  const double g[E] = {0.5, -0.25, 1.0, 0.75};  // layer 1's gate map: diag(g)
  for (int e = 0; e < E; ++e) w.layers[1].moe.gate_map[e * E + e] = float(g[e]);
  AnalysisOptions opt;
  opt.seq = 16;
  const RoutingAnalysis a = analyze_routing(c, w, kIds, opt);
  const ScoreVariance with = naive_variance(kIds, kLayer2, g, kLayer1), without = naive_variance(kIds, kLayer2);
  EXPECT_NEAR(a.with_residual[1].across_tokens, with.across_tokens, 1e-6);
  EXPECT_NEAR(a.with_residual[1].across_experts, with.across_experts, 1e-6);
  EXPECT_NEAR(a.without_residual[1].across_tokens, without.across_tokens, 1e-6);
  EXPECT_NEAR(a.without_residual[1].across_experts, without.across_experts, 1e-6);
  EXPECT_GT(std::abs(with.across_tokens - without.across_tokens), 1e-3) << "the test must tell the two apart";
}

TEST(Analyze, RejectsTokensOutsideTheVocabulary) {
  const ModelConfig c = tiny_config();
  const auto w = hand_set(c);
  EXPECT_THROW(analyze_routing(c, w, {0, 1, 7}, AnalysisOptions{}), Error);
  EXPECT_THROW(analyze_routing(c, w, {}, AnalysisOptions{}), Error);
}
