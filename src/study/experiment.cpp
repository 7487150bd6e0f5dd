#include "study/experiment.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/stats.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "model/transformer.h"
#include "train/evaluator.h"
#include "train/metrics.h"
#include "train/trainer.h"

namespace moepp {

using json = nlohmann::json;

namespace {

// The base options overridden by one run's fields.
TrainOptions run_options_unchecked(const json& base, const json& run, int64_t vocab, const std::string& data,
                                   const std::string& out) {
  json m = base;
  for (auto it = run.begin(); it != run.end(); ++it) m[it.key()] = it.value();
  const std::string name = run.value("name", std::string("?"));
  static const std::vector<std::string> known = {"name", "preset", "vanilla", "steps", "batch", "seq", "lr", "seed",
                                                 "eval_batches", "tau", "beta", "gating_residual", "zero", "copy", "vocab",
                                                 "constant", "warmup", "about", "precision", "capacity_factor"};
  for (auto it = m.begin(); it != m.end(); ++it)
    MOEPP_CHECK(std::find(known.begin(), known.end(), it.key()) != known.end(), "plan: run ", name,
                ": unknown field ", it.key());
  TrainOptions o;
  o.data_dir = data;
  o.out_dir = out;
  o.model = ModelConfig::preset(m.value("preset", std::string("small")), vocab, m.value("vanilla", false));
  if (m.contains("tau")) o.model.moe.balance_tau = m["tau"].get<double>();
  if (m.contains("beta")) o.model.balance_coef = m["beta"].get<double>();
  if (m.contains("capacity_factor")) o.model.capacity_factor = m["capacity_factor"].get<double>();
  if (m.contains("gating_residual")) o.model.gating_residual = m["gating_residual"].get<bool>();
  if (m.contains("zero")) o.model.moe.num_zero = m["zero"].get<int>();
  if (m.contains("copy")) o.model.moe.num_copy = m["copy"].get<int>();
  if (m.contains("constant")) o.model.moe.num_constant = m["constant"].get<int>();
  o.steps = m.value("steps", int64_t(1000));
  o.batch = m.value("batch", int64_t(8));
  o.seq = m.value("seq", int64_t(128));
  o.lr = m.value("lr", 1e-3);
  o.seed = m.value("seed", uint64_t(1));
  o.warmup = m.value("warmup", int64_t(-1));
  o.eval_batches = m.value("eval_batches", int64_t(16));
  const std::string precision = m.value("precision", std::string("f32"));
  MOEPP_CHECK(precision == "f32" || precision == "bf16", "plan: run ", name,
              ": \"precision\" must be \"f32\" or \"bf16\", got \"", precision, "\"");
  o.precision = parse_gemm_precision(precision);
  // The sizes divide and bound loops in training, evaluation and timing: refuse them here,
  // by name, so that the run is reported as failed instead of crashing the experiment.
  auto at_least = [&](const char* field, int64_t v, int64_t lo, const char* want) {
    MOEPP_CHECK(v >= lo, "plan: run ", name, ": \"", field, "\" must be ", want, ", got ", v);
  };
  at_least("steps", o.steps, 1, "positive");
  at_least("batch", o.batch, 1, "positive");
  at_least("seq", o.seq, 1, "positive");
  at_least("eval_batches", o.eval_batches, 0, "0 or more");
  at_least("warmup", o.warmup, -1, "-1 (5% of steps) or more");
  MOEPP_CHECK(std::isfinite(o.lr) && o.lr > 0, "plan: run ", name, ": \"lr\" must be positive, got ", o.lr);
  o.model.validate();
  return o;
}

TrainOptions run_options(const json& base, const json& run, int64_t vocab, const std::string& data,
                         const std::string& out) {
  try {
    return run_options_unchecked(base, run, vocab, data, out);
  } catch (const json::exception& e) {  // a field of the wrong JSON type: this run fails, the others go on
    fail("plan: run ", run.value("name", std::string("?")), ": ", e.what());
  }
}

// Seconds of the MoE layers' forward (router, dispatch, experts, combine) on one batch,
// median of 5 forwards (after one warm-up), as the decoder step times each MoE layer.
double time_moe_layers(const ModelConfig& cfg, const ModelParams<float>& w, const std::vector<int32_t>& tokens,
                       int64_t B, int64_t S) {
  std::vector<int32_t> ids(tokens.begin(), tokens.begin() + std::ptrdiff_t(std::min<size_t>(tokens.size(), size_t(B * S))));
  B = int64_t(ids.size()) / S;
  ids.resize(size_t(B * S));
  ModelCache<float> cache;
  std::vector<double> t;
  for (int rep = 0; rep < 6; ++rep) {
    model_forward(cfg, w, ids.data(), B, S, cache);
    double seconds = 0;
    for (size_t l = 0; l < w.layers.size(); ++l)
      if (w.layers[l].is_moe) seconds += cache.layers[l].moe_seconds;
    if (rep > 0) t.push_back(seconds);
  }
  return median(t);
}

// Mean over a run's training steps of the share of routed slots its expert capacity dropped
// (metrics.jsonl's routing.dropped_share; a step that dropped none logs no share).
double mean_train_dropped_share(const std::string& run_dir) {
  double sum = 0;
  int64_t steps = 0;
  for (const auto& line : read_metrics_log(run_dir)) {
    if (!line.contains("tokens_per_s")) continue;  // a step's line, not an evaluation's
    ++steps;
    if (line.contains("routing") && line["routing"].contains("dropped_share"))
      sum += line["routing"]["dropped_share"].get<double>();
  }
  return steps ? sum / double(steps) : 0.0;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Times every finished run's MoE layers again, in rounds that visit all runs in turn, and
// keeps each run's median: runs trained hours apart (or while the machine was busy) are
// then compared under the same conditions.
void retime_runs(const ExperimentOptions& opt, const json& plan, int64_t vocab, const std::vector<int32_t>& val,
                 std::vector<json>& results) {
  struct Timed {
    size_t result;
    LoadedModel model;
    int64_t batch, seq;
    std::vector<double> seconds;
  };
  std::vector<Timed> runs;
  const json base = plan.value("base", json::object());
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].value("status", std::string()) != "done") continue;
    const std::string name = results[i].at("name").get<std::string>();
    for (const auto& run : plan["runs"]) {
      if (run.value("name", std::string()) != name) continue;
      const TrainOptions o = run_options(base, run, vocab, opt.data_dir, opt.out_dir + "/runs/" + name);
      runs.push_back({i, load_model_folder(o.out_dir), o.batch, o.seq, {}});
    }
  }
  for (int round = 0; round < opt.retime_rounds; ++round) {
    std::fprintf(stderr, "experiment: retiming round %d of %d (%zu runs)\n", round + 1, opt.retime_rounds, runs.size());
    for (auto& r : runs) r.seconds.push_back(time_moe_layers(r.model.config, r.model.params, val, r.batch, r.seq));
  }
  for (auto& r : runs) {
    json& res = results[r.result];
    res["moe_forward_s"] = median(r.seconds);
    res["moe_forward_timing"] = "median of " + std::to_string(r.seconds.size()) + " interleaved retiming rounds";
    write_file_atomic(opt.out_dir + "/results/" + res.at("name").get<std::string>() + ".json", res.dump(2) + "\n");
  }
}

}  // namespace

void check_plan_runs(const json& plan, const std::string& where) {
  MOEPP_CHECK(plan.is_object() && plan.contains("runs") && plan["runs"].is_array() && !plan["runs"].empty(), where,
              ": the plan has no \"runs\" list");
  // Each name is a folder under runs/ and a file under results/: two runs of one name
  // would train into the same folder and overwrite each other's results.
  std::vector<std::string> names;
  for (size_t i = 0; i < plan["runs"].size(); ++i) {
    const json& run = plan["runs"][i];
    MOEPP_CHECK(run.is_object() && run.contains("name") && run["name"].is_string(), where, ": run ", i + 1,
                " needs a \"name\" string");
    const std::string name = run["name"].get<std::string>();
    MOEPP_CHECK(!name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
                    name.find('\0') == std::string::npos,
                where, ": run ", i + 1, " has the name \"", name, "\"; a run name must be a plain folder name");
    const auto seen = std::find(names.begin(), names.end(), name);
    MOEPP_CHECK(seen == names.end(), where, ": runs ", seen - names.begin() + 1, " and ", i + 1,
                " are both named \"", name, "\"; run names must be unique");
    names.push_back(name);
  }
}

std::string experiment_report(const json& plan, const std::vector<json>& results) {
  std::ostringstream md;
  md << "# Experiment " << plan.value("name", std::string("(unnamed)")) << "\n\n";
  md << "Base: `" << plan.value("base", json::object()).dump() << "`\n\n";
  // The baseline of the relative columns: the first finished vanilla run.
  const json* base = nullptr;
  for (const auto& r : results)
    if (r.value("status", "") == "done" && r.value("zc_experts", 1) == 0) {
      base = &r;
      break;
    }
  md << "| run | val loss | val ppl | FFN experts / token | FFN FLOPs vs vanilla | expert-layer fwd vs vanilla | train tokens/s |\n";
  md << "|---|---|---|---|---|---|---|\n";
  std::vector<std::string> failed;
  for (const auto& r : results) {
    const std::string name = r.value("name", std::string("?"));
    if (r.value("status", "") != "done") {
      md << "| " << name << " | failed | | | | | |\n";
      failed.push_back(name + ": " + r.value("error", std::string("(no error recorded)")));
      continue;
    }
    const double ffn = r.at("ffn_experts_per_token").get<double>(), k = r.at("top_k").get<double>();
    std::string speed = "n/a";
    if (base) speed = fmt("%.2fx", base->at("moe_forward_s").get<double>() / r.at("moe_forward_s").get<double>());
    md << "| " << name << " | " << fmt("%.4f", r.at("val_loss").get<double>()) << " | "
       << fmt("%.2f", r.at("val_ppl").get<double>()) << " | " << fmt("%.3f", ffn) << " | " << fmt("%.3f", ffn / k)
       << " | " << speed << " | " << fmt("%.0f", r.at("train_tokens_per_s").get<double>()) << " |\n";
  }
  md << "\nFFN FLOPs vs vanilla = FFN experts per token / k. Expert-layer fwd vs vanilla = the "
        "vanilla run's MoE-layer forward time over this run's, on the same validation batch, "
        "measured "
     << (base && base->contains("moe_forward_timing") ? "as the " + base->at("moe_forward_timing").get<std::string>()
                                                      : std::string("when each run was evaluated"))
     << (base ? " (baseline: " + base->value("name", std::string()) + ")" : " (no finished vanilla run: n/a)")
     << ".\n";
  // What each run changed from the base, and what its expert capacity dropped in training
  // (evaluation computes every slot, so the table's figures do not show it).
  md << "\n## Runs\n\n";
  for (const auto& r : results) {
    const std::string name = r.value("name", std::string("?"));
    std::string fields;
    for (const auto& run : plan.value("runs", json::array())) {
      if (!run.is_object() || run.value("name", std::string()) != name) continue;
      for (auto it = run.begin(); it != run.end(); ++it)
        if (it.key() != "name") fields += (fields.empty() ? "" : ", ") + it.key() + " " + it.value().dump();
    }
    md << "- " << name << ": " << (fields.empty() ? std::string("the base") : fields);
    if (r.contains("train_dropped_share"))
      md << "; capacity factor " << fmt("%g", r.at("capacity_factor").get<double>()) << " dropped "
         << fmt("%.1f", 100.0 * r.at("train_dropped_share").get<double>()) << "% of routed slots in training (mean over steps)";
    md << "\n";
  }
  if (!failed.empty()) {
    md << "\n## Failed runs\n\n";
    for (const auto& f : failed) md << "- " << f << "\n";
  }
  return md.str();
}

std::string run_experiment(const ExperimentOptions& opt) {
  const json plan = read_json_file(opt.plan_path);
  check_plan_runs(plan, opt.plan_path);  // before anything is written or trained
  const json base = plan.value("base", json::object());
  make_dirs(opt.out_dir + "/results");
  write_file_atomic(opt.out_dir + "/plan.json", plan.dump(2) + "\n");  // for `moepp analyze --experiment`
  int64_t vocab = 0;
  if (file_exists(opt.data_dir + "/tokenizer.model")) {
    vocab = Tokenizer(opt.data_dir + "/tokenizer.model").vocab_size();
  } else {
    vocab = base.value("vocab", int64_t(0));
    MOEPP_CHECK(vocab > 0, opt.data_dir, ": no tokenizer.model; the plan's base needs \"vocab\"");
  }
  const auto val = read_token_shard(opt.data_dir + "/val.bin");
  std::vector<json> results;
  for (const auto& run : plan["runs"]) {
    const std::string name = run.at("name").get<std::string>();
    const std::string dir = opt.out_dir + "/runs/" + name;
    const std::string result_path = opt.out_dir + "/results/" + name + ".json";
    json r = {{"name", name}};
    try {
      TrainOptions o = run_options(base, run, vocab, opt.data_dir, dir);
      o.quiet = opt.quiet;
      o.stop = opt.stop;
      if (opt.eval_batches > 0) o.eval_batches = opt.eval_batches;
      int64_t done = 0;
      if (file_exists(dir + "/trainer_state.json")) done = read_json_file(dir + "/trainer_state.json").value("step", int64_t(0));
      if (done >= o.steps && file_exists(result_path)) {
        std::fprintf(stderr, "experiment: %s finished earlier; skipped\n", name.c_str());
        results.push_back(read_json_file(result_path));
        continue;
      }
      if (done < o.steps) {
        o.resume = done > 0;
        std::fprintf(stderr, "experiment: %s %s (%lld of %lld steps done)\n", name.c_str(),
                     o.resume ? "resuming" : "training", (long long)done, (long long)o.steps);
        const TrainResult tr = train(o);
        MOEPP_CHECK(!tr.interrupted && tr.steps_done >= o.steps, name, ": stopped at step ", tr.steps_done);
      }
      const LoadedModel m = load_model_folder(dir);
      const EvalResult ev = evaluate(m.config, m.params, val, o.batch, o.seq, o.eval_batches);
      RoutingStats all;
      for (const auto& s : ev.routing) all.add(s);
      r.update({{"status", "done"}, {"steps", o.steps}, {"val_loss", ev.loss}, {"val_ppl", ev.perplexity},
                {"ffn_experts_per_token", all.ffn_experts_per_token()}, {"top_k", m.config.moe.top_k},
                {"zc_experts", m.config.num_experts() - m.config.num_ffn_experts()}, {"tau", m.config.moe.balance_tau},
                {"params", total_params(m.config)}, {"train_tokens_per_s", median_tokens_per_s(dir)},
                {"moe_forward_s", time_moe_layers(m.config, m.params, val, o.batch, o.seq)},
                {"routing", routing_json(ev.routing)}});
      if (o.model.capacity_factor > 0)
        r.update({{"capacity_factor", o.model.capacity_factor}, {"train_dropped_share", mean_train_dropped_share(dir)}});
      write_file_atomic(result_path, r.dump(2) + "\n");
    } catch (const Error& e) {
      std::fprintf(stderr, "experiment: %s failed: %s\n", name.c_str(), e.what());
      r.update({{"status", "failed"}, {"error", e.what()}});
      write_file_atomic(result_path, r.dump(2) + "\n");
    }
    results.push_back(r);
    MOEPP_CHECK(!(opt.stop && opt.stop->load()), "experiment: stopped by a signal during run ", name,
                "; its checkpoint is kept: the same command continues the experiment");
  }
  if (opt.retime_rounds > 0) retime_runs(opt, plan, vocab, val, results);
  const std::string report = experiment_report(plan, results);
  write_file_atomic(opt.out_dir + "/report.md", report);
  return report;
}

}  // namespace moepp
