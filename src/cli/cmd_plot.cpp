// moepp plot: the training curves of one or more run folders as gnuplot PNGs (loss and
// validation loss against tokens, learning rate, gradient norm, FFN experts per token,
// slot shares per expert kind, FFN experts per token per MoE layer), runs overlaid.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "model/params.h"
#include "study/training_plots.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

namespace moepp::cli {

namespace {

TrainingRunCurves read_run(const std::string& dir) {
  TrainingRunCurves r;
  r.metrics = read_metrics_log(dir);
  MOEPP_CHECK(!r.metrics.empty(), dir, "/metrics.jsonl: no logged steps yet");
  const ModelConfig cfg = load_model_config(dir);
  const MoeConfig moe = cfg.layer_moe();
  r.top_k = moe.top_k;
  r.zero_computation = moe.num_zero_compute() > 0;
  std::string model = "";
  const std::string state_path = checkpoint_dir(dir) + "/trainer_state.json";
  if (file_exists(state_path)) {
    const nlohmann::json st = read_json_file(state_path);
    auto integer = [&](const char* key) {
      return st.contains(key) && st[key].is_number_integer() ? st[key].get<int64_t>() : int64_t(0);
    };
    r.tokens_per_step = integer("batch") * integer("seq") * std::max<int64_t>(1, integer("accum"));
    if (st.contains("model") && st["model"].is_string()) model = st["model"].get<std::string>() + ", ";
  }
  char params[32];
  std::snprintf(params, sizeof params, "%.1fM", double(total_params(cfg)) / 1e6);
  r.description = model + (r.zero_computation ? "MoE++ " : "vanilla MoE ") + std::to_string(moe.num_ffn) + " FFN" +
                  (r.zero_computation ? " + " + std::to_string(moe.num_zero_compute()) + " zero-computation" : "") +
                  " experts, top-" + std::to_string(moe.top_k) + ", " + params + " parameters";
  return r;
}

}  // namespace

void add_plot(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot",
                                 "Training curves of run folders as PNGs (gnuplot): loss and validation loss vs tokens, "
                                 "learning rate, gradient norm, FFN experts per token, slot shares per expert kind "
                                 "(and slots dropped over capacity); several runs overlaid");
  struct Args {
    std::vector<std::string> runs;
    std::string out;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("runs", a->runs, "Run folders (metrics.jsonl, config.json, trainer_state.json)")->required();
  cmd->add_option("--out", a->out, "Output folder (default: a new folder plots-RUNNAME here)");
  cmd->callback([a] {
    std::vector<TrainingRunCurves> runs;
    for (const auto& dir : a->runs) runs.push_back(read_run(dir));
    // The legend names each run by its folder; two folders of one name get their paths.
    for (size_t i = 0; i < runs.size(); ++i) {
      runs[i].name = folder_name(a->runs[i], a->runs[i]);
      for (size_t j = 0; j < a->runs.size(); ++j)
        if (j != i && folder_name(a->runs[j], a->runs[j]) == runs[i].name) runs[i].name = a->runs[i];
    }
    const std::string out = a->out.empty() ? fresh_folder_name("plots-" + folder_name(a->runs[0], "run")) : a->out;
    const PlotResult r = plot_training_runs(runs, out);
    if (r.pngs.empty())
      std::fprintf(stderr, "plot: gnuplot not found; wrote the data and scripts into %s, no PNG (apt-get install gnuplot-nox)\n",
                   out.c_str());
    for (const auto& png : r.pngs) std::printf("%s\n", png.c_str());
    std::fprintf(stderr, "plot: %zu run%s, %zu PNGs in %s\n", runs.size(), runs.size() == 1 ? "" : "s", r.pngs.size(),
                 out.c_str());
  });
}

}  // namespace moepp::cli
