// moepp analyze: where a trained model's tokens went (FFN experts per token and layer, the
// tokens and frequency bands that use the fewest and most FFNs, slot shares, routing-score
// variance with and without gating residuals) as JSON and PNG plots; or, with
// --experiment, the tau plots of an experiment folder.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/model_folder.h"
#include "study/analysis.h"
#include "study/experiment.h"
#include "study/plots.h"

namespace moepp::cli {

namespace {

// The offset of the first byte that keeps s from being text: a NUL, or a byte that does
// not begin or continue a well-formed UTF-8 sequence (no overlong forms, surrogates or
// code points past U+10FFFF); s.size() when s is text. `why` says which.
size_t first_non_text_byte(const std::string& s, const char** why) {
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) {
      *why = "a NUL byte";
      return i;
    }
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07u;
    } else {
      *why = "a byte that cannot start a UTF-8 character";
      return i;
    }
    *why = "an incomplete or malformed UTF-8 character";
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0u) != 0x80u) return i;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return n;
}

// The tokenizer would turn a binary file into tokens without complaint, and the analysis
// of them would pass for one of a text.
std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOEPP_CHECK(in.good(), path, ": cannot open the text file");
  std::ostringstream s;
  s << in.rdbuf();
  MOEPP_CHECK(!in.bad(), path, ": read error");
  std::string text = s.str();
  const char* why = "";
  const size_t at = first_non_text_byte(text, &why);
  if (at < text.size()) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02X", unsigned(static_cast<unsigned char>(text[at])));
    fail("analyze: --text ", path, " is not UTF-8 text: ", why, " (", byte, ") at byte offset ", at);
  }
  return text;
}

void print_plots(const PlotResult& p) {
  for (const auto& png : p.pngs) std::fprintf(stderr, "analyze: wrote %s\n", png.c_str());
  if (p.pngs.empty() && !p.written.empty())
    std::fprintf(stderr, "analyze: gnuplot not found; wrote the data and scripts (%s ...), no PNG\n",
                 p.written.front().c_str());
}

void analyze_experiment(const std::string& dir, const std::string& out) {
  const nlohmann::json plan = read_json_file(dir + "/plan.json");
  check_plan_runs(plan, dir + "/plan.json");  // run names become paths under results/
  std::vector<nlohmann::json> results;
  for (const auto& run : plan.at("runs")) {
    const std::string path = dir + "/results/" + run.value("name", std::string()) + ".json";
    if (file_exists(path)) results.push_back(read_json_file(path));
  }
  print_plots(plot_experiment(plan, results, out.empty() ? dir + "/plots" : out));
}

struct AnalyzeArgs {
  std::string model, text, out, experiment, tokenizer;
  AnalysisOptions opt;
  bool no_plots = false;
  int threads = 0;
};

void analyze_model(const AnalyzeArgs& a, Collectives* comm) {
  apply_threads(a.threads);
  MOEPP_CHECK(!a.model.empty() && !a.text.empty(), "analyze: --model and --text are required (or --experiment)");
  const LoadedModel m = load_model_folder(a.model);
  const Tokenizer tok(a.tokenizer.empty() ? a.model + "/tokenizer.model" : a.tokenizer);
  const auto ids = tok.encode(read_text(a.text));
  const RoutingAnalysis r = analyze_routing(m.config, m.params, ids, a.opt, comm);
  if (comm && comm->rank() != 0) return;
  nlohmann::json j = analysis_json(r, [&](int32_t id) { return tok.piece(id); }, a.opt);
  j["model"] = a.model;
  j["text"] = a.text;
  // By default a new folder in the working directory: a model folder is a model, and a
  // second analysis must not overwrite the first.
  const std::string out = a.out.empty() ? fresh_folder_name("analysis-" + folder_name(a.model, "model")) : a.out;
  make_dirs(out);
  write_file_atomic(out + "/analysis.json", j.dump(2) + "\n");
  // Every analysed token: position, id, piece, FFN experts in each MoE layer, mean.
  std::ostringstream tsv;
  tsv << "position\tid\tpiece";
  for (int l : r.moe_layers) tsv << "\tlayer" << l;
  tsv << "\tmean\n";
  const size_t L = r.moe_layers.size();
  for (size_t t = 0; t < r.ids.size(); ++t) {
    tsv << t << "\t" << r.ids[t] << "\t" << nlohmann::json(tok.piece(r.ids[t])).dump();
    for (size_t m2 = 0; m2 < L; ++m2) tsv << "\t" << int(r.ffn_count[t * L + m2]);
    tsv << "\t" << r.ffn_mean(t) << "\n";
  }
  write_file_atomic(out + "/tokens.tsv", tsv.str());
  std::fprintf(stderr, "analyze: %zu tokens; wrote %s/analysis.json and %s/tokens.tsv\n", r.ids.size(), out.c_str(),
               out.c_str());
  if (!a.no_plots) print_plots(plot_analysis(j, out));
  nlohmann::json summary = j;
  summary.erase("sample");
  std::printf("%s\n", summary.dump(2).c_str());
}

}  // namespace

void add_analyze(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "How a trained model routes a text: FFN experts per token and layer, the tokens using the fewest and most FFNs, "
      "slot shares per expert kind, routing-score variance with/without gating residuals (JSON + gnuplot PNGs); "
      "under mpirun -np N the ranks share the text's batches and rank 0 writes the one report. "
      "With --experiment DIR: tau vs throughput and tau vs loss plots of an experiment");
  auto a = std::make_shared<AnalyzeArgs>();
  cmd->add_option("--model", a->model, "Model folder (with tokenizer.model, or give --tokenizer)");
  cmd->add_option("--text", a->text, "UTF-8 text file to route")->check(CLI::ExistingFile);
  cmd->add_option("--tokenizer", a->tokenizer, "SentencePiece model (default: MODEL/tokenizer.model)");
  cmd->add_option("--experiment", a->experiment, "Experiment folder (plan.json, results/): draw its tau plots");
  cmd->add_option("--out", a->out, "Output folder (default: a new folder analysis-MODELNAME here, never inside the model; "
                  "EXPERIMENT/plots with --experiment)");
  cmd->add_option("--seq", a->opt.seq, "Tokens per sequence")->default_val(256)->check(positive_number());
  cmd->add_option("--batch", a->opt.batch, "Sequences per forward")->default_val(8)->check(positive_number());
  cmd->add_option("--max-tokens", a->opt.max_tokens, "Analyse at most this many tokens (0: all)")
      ->default_val(50000)
      ->check(non_negative_number());
  cmd->add_option("--min-count", a->opt.min_count, "Rank a token only if it occurs this often")
      ->default_val(5)
      ->check(non_negative_number());
  cmd->add_option("--list", a->opt.list, "How many fewest/most-FFN tokens to list")
      ->default_val(15)
      ->check(non_negative_number());
  cmd->add_option("--sample-tokens", a->opt.sample_tokens, "Tokens in the per-token picture")
      ->default_val(40)
      ->check(non_negative_number());
  cmd->add_flag("--no-plots", a->no_plots, "Write JSON only");
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    if (!a->experiment.empty()) {
      apply_threads(a->threads);
      MOEPP_CHECK(a->model.empty() && a->text.empty(), "analyze: give either --experiment or --model with --text");
      analyze_experiment(a->experiment, a->out);
      return;
    }
    // Under mpirun the ranks share the text's batches; rank 0 writes and prints.
    run_distributed(1, [&](Collectives* comm) { analyze_model(*a, comm); });
  });
}

}  // namespace moepp::cli
