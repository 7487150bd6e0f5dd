// moepp compare: evaluate several run folders on the same data and print them side by
// side (validation loss, perplexity, FFN experts per token, FFN compute relative to a
// vanilla MoE, training tokens/s from metrics.jsonl), then a sample from each.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "data/data_folder.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "infer/generator.h"
#include "io/atomic_file.h"
#include "model/model_folder.h"
#include "model/params.h"
#include "study/verdict.h"
#include "train/evaluator.h"
#include "train/metrics.h"

namespace moepp::cli {

namespace {

std::string sample(const LoadedModel& m, const std::string& prompt, int n, uint64_t seed) {
  const Tokenizer tok(m.dir + "/tokenizer.model");
  return generate_text(m.config, m.params, tok, prompt, GenerateOptions{n, SamplerOptions{0.7, 40, 0.95, seed}});
}

}  // namespace

void add_compare(CLI::App& app) {
  auto* cmd = app.add_subcommand("compare", "Evaluate run folders on the same data and print them side by side");
  struct Args {
    std::vector<std::string> runs;
    std::string data, prompt = "And God said", json_out;
    int64_t batch = 8, seq = 128, max_batches = 0;
    int sample_tokens = 48, threads = 0;
    uint64_t seed = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--run", a->runs, "Run (or model) folders; the first vanilla one is the FFN-compute baseline")->required();
  cmd->add_option("--data", a->data, "Prepared data folder (val.bin)")->required();
  cmd->add_option("--batch", a->batch, "Sequences per evaluation batch")->default_val(8)->check(positive_number());
  cmd->add_option("--seq", a->seq, "Tokens per sequence")->default_val(128)->check(positive_number());
  cmd->add_option("--max-batches", a->max_batches, "Evaluation batches (0: the whole split)")
      ->default_val(0)
      ->check(non_negative_number());
  cmd->add_option("--prompt", a->prompt, "Prompt for the samples (empty: no samples)")->default_val("And God said");
  cmd->add_option("--sample-tokens", a->sample_tokens, "Tokens per sample")->default_val(48)->check(non_negative_number());
  cmd->add_option("--seed", a->seed, "Sampling seed")->default_val(1);
  cmd->add_option("--json", a->json_out, "Also write the table as JSON to this file");
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    apply_threads(a->threads);
    const auto tokens = read_token_shard(a->data + "/val.bin");
    nlohmann::json rows = nlohmann::json::array();
    std::vector<EvalResult> evals;
    std::vector<std::string> samples;
    for (const auto& run : a->runs) {
      std::fprintf(stderr, "compare: evaluating %s\n", run.c_str());
      check_data_tokenizer(a->data, run + "/tokenizer.model", "compare");
      const LoadedModel m = load_model_folder(run);
      MOEPP_CHECK(a->seq <= m.config.max_position_embeddings, "compare: --seq ", a->seq, " is longer than the context of ",
                  run, " (max_position_embeddings ", m.config.max_position_embeddings, ")");
      const EvalResult r = evaluate(m.config, m.params, tokens, a->batch, a->seq, a->max_batches);
      MOEPP_CHECK(std::isfinite(r.loss), "compare: ", run, ": the validation loss is ", r.loss,
                  " (the model's weights or activations are not finite)");
      RoutingStats all;
      for (const auto& s : r.routing) all.add(s);
      const MoeConfig mc = m.config.layer_moe();
      const double train_tps = median_tokens_per_s(run);
      evals.push_back(r);
      rows.push_back({{"run", run}, {"kind", mc.num_zero_compute() ? "MoE++" : "vanilla"},
                      {"ffn_experts", mc.num_ffn}, {"zc_experts", mc.num_zero_compute()}, {"top_k", mc.top_k},
                      {"tau", m.config.moe.balance_tau}, {"params", total_params(m.config)},
                      {"val_loss", r.loss}, {"val_ppl", r.perplexity}, {"val_tokens", r.tokens},
                      {"ffn_experts_per_token", all.ffn_experts_per_token()},
                      {"ffn_compute_vs_vanilla", all.ffn_flops_vs_vanilla()},
                      // null where the folder has no training log (a converted or downloaded model)
                      {"train_tokens_per_s", train_tps > 0 ? nlohmann::json(train_tps) : nlohmann::json(nullptr)},
                      {"routing", routing_json(r.routing)}});
      if (!a->prompt.empty()) samples.push_back(sample(m, a->prompt, a->sample_tokens, a->seed));
    }
    int width = 28;  // the run column fits the longest path
    for (const auto& run : a->runs) width = std::max(width, int(run.size()));
    std::printf("\n%-*s %-8s %10s %9s %9s %9s %11s %12s\n", width, "run", "kind", "params", "val loss", "val ppl", "FFN/tok",
                "FFN vs van", "train tok/s");
    for (const auto& r : rows) {
      const auto& tps = r["train_tokens_per_s"];
      const std::string tps_text = tps.is_null() ? "n/a" : std::to_string(std::lround(tps.get<double>()));
      std::printf("%-*s %-8s %10lld %9.4f %9.2f %9.3f %11.3f %12s\n", width, r["run"].get<std::string>().c_str(),
                  r["kind"].get<std::string>().c_str(), (long long)r["params"].get<int64_t>(), r["val_loss"].get<double>(),
                  r["val_ppl"].get<double>(), r["ffn_experts_per_token"].get<double>(),
                  r["ffn_compute_vs_vanilla"].get<double>(), tps_text.c_str());
    }
    std::printf("(val loss over %lld held-out tokens; FFN vs van = mean FFN experts per token / k, the FFN compute\n"
                " relative to a vanilla top-k MoE with the same FFN experts; train tok/s = the median of the run's\n"
                " logged steps after the first 10, n/a without them)\n",
                (long long)rows[0]["val_tokens"].get<int64_t>());
    // Each MoE++ run against the first vanilla run, in words.
    nlohmann::json verdicts = nlohmann::json::array();
    const auto vanilla = std::find_if(rows.begin(), rows.end(), [](const auto& r) { return r["kind"] == "vanilla"; });
    for (size_t i = 0; i < rows.size() && vanilla != rows.end(); ++i) {
      if (rows[i]["kind"] != "MoE++") continue;
      const size_t v = size_t(vanilla - rows.begin());
      TwinVerdict t;
      t.moepp_run = a->runs[i];
      t.vanilla_run = a->runs[v];
      t.moepp_loss = evals[i].loss;
      t.vanilla_loss = evals[v].loss;
      t.loss_difference = paired_difference(evals[i].batch_losses, evals[v].batch_losses);
      t.val_tokens = evals[i].tokens;
      t.moepp_ffn_per_token = rows[i]["ffn_experts_per_token"].get<double>();
      t.vanilla_ffn_per_token = rows[v]["ffn_experts_per_token"].get<double>();
      t.top_k = rows[v]["top_k"].get<int>();
      auto tps = [](const nlohmann::json& r) { return r["train_tokens_per_s"].is_null() ? 0.0 : r["train_tokens_per_s"].get<double>(); };
      t.moepp_tokens_per_s = tps(rows[i]);
      t.vanilla_tokens_per_s = tps(rows[v]);
      std::printf("\n%s", t.text().c_str());
      verdicts.push_back(t.to_json());
    }
    for (size_t i = 0; i < samples.size(); ++i)
      std::printf("\n--- sample from %s (temperature 0.7, seed %llu)\n%s\n", a->runs[i].c_str(),
                  (unsigned long long)a->seed, samples[i].c_str());
    if (!a->json_out.empty()) {
      write_file_atomic(a->json_out, nlohmann::json{{"runs", rows}, {"verdicts", verdicts}}.dump(2) + "\n");
      std::fprintf(stderr, "compare: wrote %s\n", a->json_out.c_str());
    }
  });
}

}  // namespace moepp::cli
