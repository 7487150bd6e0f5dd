// bench/checkpoint: the cost of writing and loading a checkpoint, atomic as a set
// (train/checkpoint.cpp: a staged folder, a digest manifest, one symlink switch) against
// the per-file scheme it replaced (each file atomic on its own, written in place), in
// alternating rounds of the same run. Random weights and moments (the digest reads every
// byte; zeros would flatter nothing, but random is what a run has).
// Usage: checkpoint_bench [--preset small] [--vocab 8000] [--repeats 3] [--dir /tmp/...] [--json FILE]
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "core/rng.h"
#include "core/stats.h"
#include "io/atomic_file.h"
#include "model/model_folder.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"

using namespace moepp;
using namespace moepp::bench;
using json = nlohmann::json;

namespace {

// The scheme before checkpoints were folders: the same files, each atomic, in place.
void save_per_file(const std::string& dir, const ModelConfig& cfg, const ModelParams<float>& params, AdamW& opt,
                   json state) {
  make_dirs(dir);
  write_params(dir + "/optimizer.m.safetensors", cfg, opt.m(), "m.");
  write_params(dir + "/optimizer.v.safetensors", cfg, opt.v(), "v.");
  save_model_folder(dir, cfg, params);
  state["optimizer_step"] = opt.step();
  write_file_atomic(dir + "/trainer_state.json", state.dump(2) + "\n");
}

void randomize(const ModelConfig& cfg, ModelParams<float>& p, uint64_t seed) {
  Rng rng(seed);
  p.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
    for (int64_t i = 0; i < t.numel(); ++i) t[i] = float(rng.normal());
  });
}

}  // namespace

int main(int argc, char** argv) {
  const Flags flags(argc, argv);
  const std::string preset = flags.get("preset", "small");
  const int repeats = int(flags.get_int("repeats", 3));
  const std::string root = flags.get("dir", "/tmp/moepp-checkpoint-bench-" + std::to_string(::getpid()));
  const ModelConfig cfg = ModelConfig::preset(preset, flags.get_int("vocab", 8000));
  auto params = ModelParams<float>::zeros(cfg);
  AdamW opt(cfg, AdamWConfig{0.9, 0.95, 1e-8, 0.1});
  randomize(cfg, params, 1);
  randomize(cfg, opt.m(), 2);
  randomize(cfg, opt.v(), 3);
  const double gb = 3.0 * double(total_params(cfg)) * 4 / 1e9;
  std::fprintf(stderr, "checkpoint_bench: %s, %.2f GB of tensors per checkpoint, %d alternating rounds in %s\n",
               preset.c_str(), gb, repeats, root.c_str());
  make_dirs(root);
  std::vector<double> per_file, as_set, load_plain, load_checked;
  for (int r = 0; r <= repeats; ++r) {  // round 0 warms the page cache and the file system
    const json state = {{"step", r + 1}, {"loader_epoch", 0}, {"loader_index", 0}};
    opt.set_step(r + 1);
    const double a = seconds_of([&] { save_per_file(root + "/per_file", cfg, params, opt, state); });
    const double b = seconds_of([&] { save_checkpoint(root + "/set", cfg, params, opt, state, ""); });
    auto p2 = ModelParams<float>::zeros(cfg);
    AdamW o2(cfg, AdamWConfig{0.9, 0.95, 1e-8, 0.1});
    const double c = seconds_of([&] {
      read_params(root + "/per_file/model.safetensors", cfg, p2);
      read_params(root + "/per_file/optimizer.m.safetensors", cfg, o2.m(), "m.");
      read_params(root + "/per_file/optimizer.v.safetensors", cfg, o2.v(), "v.");
    });
    const double d = seconds_of([&] {
      const std::string run = root + "/set";
      load_checkpoint(run, read_checkpoint_state(run), cfg, p2, o2);
    });
    std::fprintf(stderr, "  round %d: write per-file %.2f s, as a set %.2f s; load plain %.2f s, checked %.2f s%s\n", r,
                 a, b, c, d, r == 0 ? " (warm-up, not counted)" : "");
    if (r == 0) continue;
    per_file.push_back(a);
    as_set.push_back(b);
    load_plain.push_back(c);
    load_checked.push_back(d);
  }
  remove_tree(root);
  const json out = {{"preset", preset},
                    {"gigabytes", gb},
                    {"write_per_file_s", median(per_file)},
                    {"write_as_set_s", median(as_set)},
                    {"write_ratio", median(as_set) / median(per_file)},
                    {"load_plain_s", median(load_plain)},
                    {"load_checked_s", median(load_checked)},
                    {"load_ratio", median(load_checked) / median(load_plain)}};
  std::printf("%s\n", out.dump(2).c_str());
  if (flags.has("json")) std::ofstream(flags.get("json", "")) << out.dump(2) << "\n";
  return 0;
}
