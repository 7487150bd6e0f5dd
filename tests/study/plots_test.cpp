// Plot data: the tau sweep and its baseline are picked from the plan, and every number in
// the written table comes from the results (gnuplot itself is optional and not tested).
#include "study/plots.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <sstream>

using namespace moepp;
using json = nlohmann::json;

TEST(Plots, TauSweepTableComesFromTheResults) {
  const json plan = {{"runs",
                      {{{"name", "vanilla"}, {"vanilla", true}},
                       {{"name", "t1"}, {"tau", 0.1}},
                       {{"name", "t5"}, {"tau", 0.5}},
                       {{"name", "t5-ablation"}, {"tau", 0.5}, {"zero", 0}},
                       {{"name", "vanilla-seed2"}, {"vanilla", true}, {"seed", 2}}}}};
  auto res = [](const std::string& name, double loss, double ffn, double secs) {
    return json{{"name", name}, {"status", "done"}, {"val_loss", loss}, {"top_k", 2}, {"ffn_experts_per_token", ffn},
                {"moe_forward_s", secs}};
  };
  const std::vector<json> results = {res("vanilla", 4.0, 2.0, 0.30), res("t1", 3.9, 0.8, 0.15),
                                     res("t5", 3.8, 1.0, 0.20), res("t5-ablation", 9.0, 1.9, 0.29),
                                     res("vanilla-seed2", 9.0, 2.0, 9.0)};
  const std::string dir = test::scratch_dir("moepp-plots");
  const PlotResult r = plot_experiment(plan, results, dir);
  ASSERT_EQ(r.written.size(), 2u);
  std::ifstream in(dir + "/tau_throughput.tsv");
  std::string header, line;
  std::getline(in, header);
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::vector<double> v;
    std::string cell;
    while (std::getline(s, cell, '\t')) v.push_back(std::stod(cell));
    rows.push_back(v);
  }
  ASSERT_EQ(rows.size(), 2u) << "only the runs that set nothing but tau";
  // tau, measured speed-up (0.30 / run's time), ideal k / FFN per token, paper, loss.
  EXPECT_DOUBLE_EQ(rows[0][0], 0.1);
  EXPECT_NEAR(rows[0][1], 2.0, 1e-9);
  EXPECT_NEAR(rows[0][2], 2.5, 1e-9);
  EXPECT_NEAR(rows[0][3], 2.64, 1e-9);
  EXPECT_NEAR(rows[0][4], 3.9, 1e-9);
  EXPECT_NEAR(rows[1][1], 1.5, 1e-9);
  EXPECT_NEAR(rows[1][2], 2.0, 1e-9);
  EXPECT_NEAR(rows[1][3], 1.38, 1e-9);
  std::ifstream gp(dir + "/tau_loss.gp");
  std::stringstream script;
  script << gp.rdbuf();
  EXPECT_NE(script.str().find("4 with lines"), std::string::npos) << "vanilla's loss is the baseline line";
}
