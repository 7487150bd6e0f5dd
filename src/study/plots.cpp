#include "study/plots.h"

#include <map>
#include <sstream>

#include "study/gnuplot.h"

namespace moepp {

using json = nlohmann::json;

namespace {

// The MoE++ paper's expert-forward throughput over vanilla for 0.6B/(8+4)E (its Table 3).
const std::map<double, double> kPaperSpeedup = {{0.1, 2.64}, {0.25, 1.93}, {0.5, 1.38}, {0.75, 1.25}, {1.0, 1.19}};

const json* find_result(const std::vector<json>& results, const std::string& name) {
  for (const auto& r : results)
    if (r.value("name", std::string()) == name && r.value("status", std::string()) == "done") return &r;
  return nullptr;
}

}  // namespace

PlotResult plot_analysis(const json& a, const std::string& dir) {
  PlotResult r;
  const int k = a.at("top_k").get<int>();
  {
    std::ostringstream tsv;
    tsv << "# position\ttoken\tFFN experts (mean over MoE layers)\n";
    int i = 0;
    for (const auto& t : a.at("sample")) tsv << i++ << "\t" << gnuplot_text(t.at("piece").get<std::string>()) << "\t"
                                              << t.at("ffn_experts").get<double>() << "\n";
    std::ostringstream gp;
    gp << gnuplot_header("ffn_per_token", 1200, 450)
       << "set title 'FFN experts per token across the sample text (mean over MoE layers; top-" << k << ")'\n"
       << "set ylabel 'FFN experts'\nset yrange [0:" << k << ".2]\nset xtics rotate by 90 right font ',9'\n"
       << "set style fill solid 0.7\nset boxwidth 0.8\nset key off\n"
       << "plot 'ffn_per_token.tsv' using 1:3:xtic(2) with boxes lc rgb '#3b6ea5'\n";
    draw_plot(dir, "ffn_per_token", tsv.str(), gp.str(), r);
  }
  {
    std::ostringstream tsv;
    tsv << "# layer\tFFN\tconstant\tcopy\tzero\n";
    for (const auto& l : a.at("layers")) {
      const auto& s = l.at("share");
      tsv << "layer " << l.at("layer").get<int>() << "\t" << s.at("ffn").get<double>() << "\t"
          << s.at("constant").get<double>() << "\t" << s.at("copy").get<double>() << "\t" << s.at("zero").get<double>()
          << "\n";
    }
    std::ostringstream gp;
    gp << gnuplot_header("slot_shares", 800, 450) << "set title 'Share of routing slots per expert kind, by MoE layer'\n"
       << "set ylabel 'share of slots'\nset yrange [0:1]\nset style data histograms\n"
       << "set style histogram rowstacked\nset style fill solid 0.8 border -1\nset boxwidth 0.6\n"
       << "set key outside right\n"
       << "plot 'slot_shares.tsv' using 2:xtic(1) title 'FFN', '' using 3 title 'constant', "
          "'' using 4 title 'copy', '' using 5 title 'zero'\n";
    draw_plot(dir, "slot_shares", tsv.str(), gp.str(), r);
  }
  return r;
}

PlotResult plot_experiment(const json& plan, const std::vector<json>& results, const std::string& dir) {
  PlotResult r;
  const json* vanilla = nullptr;
  std::vector<std::pair<double, const json*>> sweep;
  for (const auto& run : plan.at("runs")) {
    const std::string name = run.value("name", std::string());
    const json* res = find_result(results, name);
    if (!res) continue;
    if (run.size() == 2 && run.contains("vanilla") && run["vanilla"].get<bool>() && !vanilla) vanilla = res;
    if (run.size() == 2 && run.contains("tau")) sweep.push_back({run["tau"].get<double>(), res});
  }
  if (!vanilla || sweep.empty()) return r;  // nothing to draw against
  const double v_time = vanilla->at("moe_forward_s").get<double>();
  const double v_loss = vanilla->at("val_loss").get<double>();
  std::ostringstream tsv;
  tsv << "# tau\tmeasured expert-layer fwd speed-up\tideal (1 / FFN FLOPs share)\tpaper 0.6B\tval loss\n";
  for (const auto& [tau, res] : sweep) {
    const auto paper = kPaperSpeedup.find(tau);
    tsv << tau << "\t" << v_time / res->at("moe_forward_s").get<double>() << "\t"
        << double(res->at("top_k").get<int>()) / res->at("ffn_experts_per_token").get<double>() << "\t"
        << (paper == kPaperSpeedup.end() ? std::string("NaN") : std::to_string(paper->second)) << "\t"
        << res->at("val_loss").get<double>() << "\n";
  }
  const std::string data = tsv.str();
  {
    std::ostringstream gp;
    gp << gnuplot_header("tau_throughput", 800, 480) << "set title 'MoE++ expert-layer forward speed-up over vanilla MoE vs tau'\n"
       << "set xlabel 'tau (balance weight of zero-computation experts)'\nset ylabel 'x vanilla'\n"
       << "set yrange [0:*]\nset key top right\n"
       << "plot 'tau_throughput.tsv' using 1:2 with linespoints lw 2 pt 7 title 'measured (this run)', "
          "'' using 1:3 with linespoints dt 2 pt 6 title 'ideal: k / FFN experts per token', "
          "'' using 1:4 with linespoints dt 3 pt 4 title 'paper, 0.6B/(8+4)E', 1 with lines lc rgb 'gray' title 'vanilla'\n";
    draw_plot(dir, "tau_throughput", data, gp.str(), r);
  }
  {
    std::ostringstream gp;
    gp << gnuplot_header("tau_loss", 800, 480) << "set title 'Validation loss vs tau (vanilla MoE as the line)'\n"
       << "set xlabel 'tau'\nset ylabel 'validation loss (nats/token)'\nset key top left\n"
       << "plot 'tau_loss.tsv' using 1:5 with linespoints lw 2 pt 7 title 'MoE++', " << v_loss
       << " with lines lc rgb 'gray' lw 2 title 'vanilla MoE'\n";
    draw_plot(dir, "tau_loss", data, gp.str(), r);
  }
  return r;
}

}  // namespace moepp
