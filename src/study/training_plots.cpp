#include "study/training_plots.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace moepp {

using json = nlohmann::json;

namespace {

// The value as the log has it: json's shortest round-trip form, "NaN" when absent.
std::string cell(const json& line, std::initializer_list<const char*> path) {
  const json* v = &line;
  for (const char* key : path) {
    if (!v->is_object() || !v->contains(key)) return "NaN";
    v = &(*v)[key];
  }
  return v->is_number() ? v->dump() : "NaN";
}

std::string run_file(size_t i, const char* kind) { return "run" + std::to_string(i + 1) + "." + kind + ".tsv"; }

size_t layer_count(const TrainingRunCurves& r) {
  size_t n = 0;
  for (const auto& line : r.metrics)
    if (line.contains("routing") && line["routing"].contains("layers"))
      n = std::max(n, line["routing"]["layers"].size());
  return n;
}

// A run trained with a capacity factor logs the slots it dropped (moe/dispatch.h).
bool drops_slots(const TrainingRunCurves& r) {
  for (const auto& line : r.metrics)
    if (line.contains("routing") && line["routing"].contains("dropped_share")) return true;
  return false;
}

void write_run_data(const TrainingRunCurves& r, size_t i, const std::string& dir) {
  const size_t layers = layer_count(r);
  std::ostringstream steps, val;
  steps << "# run: " << r.name << " (" << r.description << ")\n"
        << "# step\ttokens\tloss\tlm_loss\tbalance_loss\tlr\tgrad_norm\ttokens_per_s\tffn_experts_per_token"
           "\tshare_ffn\tshare_zero\tshare_copy\tshare_constant";
  for (size_t l = 0; l < layers; ++l) steps << "\tffn_experts_per_token_moe_layer" << l;
  steps << "\tdropped_share\n";
  val << "# run: " << r.name << " (" << r.description << ")\n# step\ttokens\tval_loss\tval_perplexity\tval_tokens\n";
  for (const auto& line : r.metrics) {
    MOEPP_CHECK(line.contains("step") && line["step"].is_number_integer(), "plot: ", r.name,
                ": a metrics line without an integer \"step\": ", line.dump().substr(0, 80));
    const int64_t step = line["step"].get<int64_t>();
    const std::string tokens = r.tokens_per_step > 0 ? std::to_string(step * r.tokens_per_step) : "NaN";
    if (line.contains("loss")) {
      steps << step << "\t" << tokens;
      for (const char* key : {"loss", "lm_loss", "balance_loss", "lr", "grad_norm", "tokens_per_s"})
        steps << "\t" << cell(line, {key});
      steps << "\t" << cell(line, {"routing", "ffn_experts_per_token"});
      for (const char* kind : {"ffn", "zero", "copy", "constant"}) steps << "\t" << cell(line, {"routing", "share", kind});
      const json* per_layer = line.contains("routing") && line["routing"].contains("layers") ? &line["routing"]["layers"]
                                                                                            : nullptr;
      for (size_t l = 0; l < layers; ++l)
        steps << "\t"
              << (per_layer && l < per_layer->size() ? cell((*per_layer)[l], {"ffn_experts_per_token"}) : "NaN");
      // Dropped over capacity, of all routed slots (absent: none dropped).
      steps << "\t" << (line.contains("routing") && line["routing"].contains("dropped_share")
                             ? cell(line, {"routing", "dropped_share"})
                             : "0");
      steps << "\n";
    }
    if (line.contains("val_loss"))
      val << step << "\t" << tokens << "\t" << cell(line, {"val_loss"}) << "\t" << cell(line, {"val_perplexity"})
          << "\t" << cell(line, {"val_tokens"}) << "\n";
  }
  make_dirs(dir);
  write_file_atomic(dir + "/" + run_file(i, "steps"), steps.str());
  write_file_atomic(dir + "/" + run_file(i, "val"), val.str());
}

// "A: description" for each run, one title line each (inside a gnuplot double-quoted string).
std::string runs_lines(const std::vector<TrainingRunCurves>& runs) {
  std::string s;
  for (size_t i = 0; i < runs.size(); ++i)
    s += (i ? "\\n" : "") + gnuplot_text(runs[i].name) + ": " + gnuplot_text(runs[i].description);
  return s;
}

// A plot of one steps.tsv column for every run, one colour per run.
std::string per_run_lines(const std::vector<TrainingRunCurves>& runs, int x_col, int y_col, const std::string& what) {
  std::ostringstream p;
  p << "plot ";
  for (size_t i = 0; i < runs.size(); ++i)
    p << (i ? ", " : "") << "'" << run_file(i, "steps") << "' using " << x_col << ":" << y_col << " with lines lw 2 dt "
      << i + 1 << " lc " << i + 1 << " title \"" << gnuplot_text(runs[i].name) << (what.empty() ? "" : ": " + what) << "\"";
  return p.str();
}

}  // namespace

PlotResult plot_training_runs(const std::vector<TrainingRunCurves>& runs, const std::string& dir) {
  MOEPP_CHECK(!runs.empty(), "plot: no runs");
  PlotResult r;
  for (size_t i = 0; i < runs.size(); ++i) write_run_data(runs[i], i, dir);
  const bool by_tokens = std::all_of(runs.begin(), runs.end(), [](const auto& x) { return x.tokens_per_step > 0; });
  const int x = by_tokens ? 2 : 1;
  const std::string xlabel = by_tokens ? "training tokens seen" : "step";
  const std::string subtitle = runs_lines(runs);
  const int height = 500 + 16 * int(runs.size());
  auto head = [&](const std::string& name, const std::string& title) {
    return gnuplot_header(name, 1150, height) + "set title \"" + title + "\\n" + subtitle +
           "\"\nset key outside right top vertical\n";
  };
  {
    std::ostringstream gp;
    gp << head("loss", "Cross-entropy: training (each step's batch) and validation (held-out tokens of val.bin)")
       << "set xlabel '" << xlabel << "'\nset ylabel 'cross-entropy (nats/token)'\nplot ";
    for (size_t i = 0; i < runs.size(); ++i) {
      const std::string n = gnuplot_text(runs[i].name);
      gp << (i ? ", " : "") << "'" << run_file(i, "steps") << "' using " << x << ":4 with lines lw 1 lc " << i + 1
         << " title \"" << n << ": training (per step)\", '" << run_file(i, "val") << "' using " << x
         << ":3 with linespoints lw 2 pt 7 lc " << i + 1 << " title \"" << n << ": validation\"";
    }
    gp << "\n";
    draw_plot(dir, "loss", "", gp.str(), r);
  }
  {
    std::ostringstream gp;
    gp << head("lr", "Learning rate (warmup, then cosine decay)") << "set xlabel 'step'\nset ylabel 'learning rate'\n"
       << per_run_lines(runs, 1, 6, "") << "\n";
    draw_plot(dir, "lr", "", gp.str(), r);
  }
  {
    std::ostringstream gp;
    gp << head("grad_norm", "Global gradient norm before clipping (log scale)")
       << "set xlabel 'step'\nset ylabel 'gradient norm'\nset logscale y\n" << per_run_lines(runs, 1, 7, "") << "\n";
    draw_plot(dir, "grad_norm", "", gp.str(), r);
  }
  {
    int k = 0;
    for (const auto& run : runs) k = std::max(k, run.top_k);
    std::ostringstream gp;
    gp << head("ffn_per_token", "FFN experts per token (mean over MoE layers and the step's batch)")
       << "set xlabel 'step'\nset ylabel 'FFN experts per token'\nset yrange [0:" << k + 0.2 << "]\n"
       << per_run_lines(runs, 1, 9, "") << ", " << k << " with lines dt 2 lc rgb 'gray' title 'top-k = " << k
       << " (vanilla MoE)'\n";
    draw_plot(dir, "ffn_per_token", "", gp.str(), r);
  }
  {
    std::ostringstream gp;
    gp << head("slot_shares", "Share of routing slots per expert kind (the step's batch; colour: kind, dash: run)")
       << "set xlabel 'step'\nset ylabel 'share of slots'\nset yrange [0:1.05]\nplot ";
    const char* kinds[] = {"FFN", "zero", "copy", "constant"};
    const char* colours[] = {"#3b6ea5", "#c0392b", "#27ae60", "#e67e22"};
    bool first = true;
    for (size_t i = 0; i < runs.size(); ++i)
      for (int c = 0; c < 4; ++c) {
        if (!runs[i].zero_computation && c > 0) continue;  // a vanilla run's slots are all FFN
        gp << (first ? "" : ", ") << "'" << run_file(i, "steps") << "' using 1:" << 10 + c << " with lines lw 2 dt "
           << i + 1 << " lc rgb '" << colours[c] << "' title \"" << gnuplot_text(runs[i].name) << ": " << kinds[c] << "\"";
        first = false;
      }
    for (size_t i = 0; i < runs.size(); ++i)
      if (drops_slots(runs[i]))
        gp << ", '" << run_file(i, "steps") << "' using 1:" << 14 + layer_count(runs[i]) << " with lines lw 2 dt "
           << i + 1 << " lc rgb 'black' title \"" << gnuplot_text(runs[i].name) << ": dropped over capacity (of all)\"";
    gp << "\n";
    draw_plot(dir, "slot_shares", "", gp.str(), r);
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    const size_t layers = layer_count(runs[i]);
    if (!runs[i].zero_computation || layers < 2) continue;
    const std::string name = "ffn_per_token_by_layer-run" + std::to_string(i + 1);
    std::ostringstream gp;
    gp << gnuplot_header(name, 1150, 520) << "set title \"FFN experts per token in each MoE layer (the step's batch): "
       << gnuplot_text(runs[i].name) << "\\n" << gnuplot_text(runs[i].description) << "\"\nset key outside right\n"
       << "set xlabel 'step'\nset ylabel 'FFN experts per token'\nset yrange [0:" << runs[i].top_k + 0.2 << "]\nplot ";
    for (size_t l = 0; l < layers; ++l)
      gp << (l ? ", " : "") << "'" << run_file(i, "steps") << "' using 1:" << 14 + l << " with lines lw 2 title 'MoE layer "
         << l << "'";
    gp << "\n";
    draw_plot(dir, name, "", gp.str(), r);
  }
  return r;
}

}  // namespace moepp
