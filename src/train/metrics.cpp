#include "train/metrics.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/stats.h"
#include "io/atomic_file.h"

namespace moepp {

using json = nlohmann::json;

namespace {
json shares(const RoutingStats& s) {
  return {{"ffn", s.share(ExpertKind::ffn)}, {"zero", s.share(ExpertKind::zero)},
          {"copy", s.share(ExpertKind::copy)}, {"constant", s.share(ExpertKind::constant)}};
}
}  // namespace

json routing_json(const std::vector<RoutingStats>& per_layer) {
  RoutingStats all;
  json layers = json::array();
  for (const auto& s : per_layer) {
    all.add(s);
    json layer = {{"ffn_experts_per_token", s.ffn_experts_per_token()}, {"share", shares(s)},
                  {"ffn_load_max_over_mean", s.ffn_load_max_over_mean()}};
    if (s.dropped) layer["dropped_share"] = s.dropped_share();
    layers.push_back(std::move(layer));
  }
  // Pooled over layers: tokens counted once per layer, so per-token means are layer means.
  json out = {{"ffn_experts_per_token", all.ffn_experts_per_token()},
              {"ffn_flops_vs_vanilla", all.ffn_flops_vs_vanilla()},
              {"share", shares(all)},
              {"ffn_load_max_over_mean", all.ffn_load_max_over_mean()},
              {"layers", layers}};
  // With a capacity factor: the slots dropped over capacity, of all routed (the shares and
  // FFN figures above count the computed slots).
  if (all.dropped) out["dropped_share"] = all.dropped_share();
  return out;
}

void append_jsonl(const std::string& path, const json& line) {
  std::ofstream out(path, std::ios::app);
  MOEPP_CHECK(out, path, ": cannot append metrics");
  out << line.dump() << "\n";
  out.flush();
  MOEPP_CHECK(out, path, ": write failed");
}

std::vector<json> read_metrics_log(const std::string& run_dir) {
  const std::string path = run_dir + "/metrics.jsonl";
  std::ifstream in(path);
  MOEPP_CHECK(in, path, ": cannot open (is ", run_dir, " a training run folder?)");
  std::vector<json> lines;
  std::string line, bad;
  int64_t number = 0, bad_number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!bad.empty())
      fail(path, ": line ", bad_number, " is not a JSON object: ", bad.substr(0, 80));
    try {
      json j = json::parse(line);
      MOEPP_CHECK(j.is_object(), path, ": line ", number, " is not a JSON object: ", line.substr(0, 80));
      lines.push_back(std::move(j));
    } catch (const json::exception&) {
      bad = line.empty() ? std::string("(empty)") : line;  // fine only as the last line
      bad_number = number;
    }
  }
  MOEPP_CHECK(!in.bad(), path, ": read error");
  return lines;
}

double median_tokens_per_s(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<double> v;
  std::string line;
  while (std::getline(in, line)) {
    try {
      const json j = json::parse(line);
      if (j.contains("tokens_per_s") && j.value("step", 0) > 10) v.push_back(j["tokens_per_s"].get<double>());
    } catch (const json::exception&) {
    }
  }
  return median(v);
}

void truncate_jsonl_after(const std::string& path, int64_t max_step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      const json j = json::parse(line);
      if (j.contains("step") && j["step"].get<int64_t>() > max_step) continue;
    } catch (const json::exception&) {
      continue;  // a torn last line from a crash
    }
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace moepp
