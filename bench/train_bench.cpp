// bench/train: training tokens/s of a preset model (default `small`), MoE++ against its
// vanilla twin in the same run, f32 and (where the CPU has native bf16 products, unless
// --bf16 0) bf16 products, on synthetic tokens (speed does not depend on the text),
// and peak memory against the planned sum of parameters, gradients, AdamW moments and
// activations. The four runs (MoE++ and vanilla, f32 and bf16) take their steps in turn,
// so that the ratios between them see the same machine. A PyTorch eager peer of the same
// model runs through bench/train_torch.py when --torch 1 and Debian's python3-torch is
// installed.
// Usage: train_bench [--preset small] [--steps 20] [--batch 8] [--seq 128] [--threads 2] [--pin 1]
//        [--vocab 4000] [--torch 1] [--bf16 1] [--json FILE]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "kernels/mixed_precision.h"
#include "kernels/product_clock.h"
#include "model/params.h"
#include "model/transformer.h"
#include "train/bf16_weights.h"
#include "train/optimizer.h"

using namespace moepp;
using namespace moepp::bench;
using json = nlohmann::json;

namespace {

double peak_rss_mb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

// Bytes of the activations the backward keeps for one batch (the ModelCache), summed
// from its tensors after a forward and backward.
double cache_mb(const ModelCache<float>& c) {
  double b = 0;
  auto add = [&](const auto& t) { b += double(t.numel()) * 4; };
  for (const auto& l : c.layers) {
    add(l.x); add(l.h); add(l.b); add(l.rstd2);
    add(l.attn.a); add(l.attn.rstd); add(l.attn.q); add(l.attn.k); add(l.attn.v); add(l.attn.softmax_stats); add(l.attn.ctx);
    add(l.mlp.gu); add(l.mlp.act);
    const auto& m = l.moe;
    add(m.x_in); add(m.router.z); add(m.router.s); add(m.router.p); add(m.router.g); add(m.router.hidden);
    add(m.ffn.x); add(m.ffn.u); add(m.ffn.h); add(m.ffn.o); add(m.constant_a);
  }
  {
    const auto& m = c.layer_scratch.moe;  // one for all layers
    add(m.d_o); add(m.d_h); add(m.d_u); add(m.d_xg); add(m.dx_in); add(m.dg); add(m.dp);
  }
  add(c.x_final); add(c.normed); add(c.rstd_final); add(c.logits); add(c.dlogits);
  return b / 1e6;
}

// One model training on synthetic tokens at one precision, a step at a time, so that the
// bench can interleave its runs: each round steps every run once, and a ratio between two
// runs is taken within each round, where the VM's drift touches both alike.
class TrainingRun {
 public:
  // `products` (one clock for all runs: a process has one) splits the step's time.
  TrainingRun(const ModelConfig& cfg, int64_t B, int64_t S, GemmPrecision precision, const ProductClock& products)
      : cfg_(cfg), B_(B), S_(S), precision_(precision), products_(products), rng_(7), params_(ModelParams<float>::zeros(cfg)),
        grads_(ModelParams<float>::zeros(cfg)), opt_(cfg, AdamWConfig{}), ids_(size_t(B * S)),
        targets_(size_t(B * S)) {
    params_.init(cfg, rng_);
  }

  // One training step as the trainer takes it; its phases are kept when `record`.
  void step(bool record) {
    for (size_t i = 0; i < ids_.size(); ++i) {
      ids_[i] = int32_t(rng_.below(uint64_t(cfg_.vocab_size)));
      targets_[i] = int32_t(rng_.below(uint64_t(cfg_.vocab_size)));
    }
    using clock = std::chrono::steady_clock;
    const auto seconds = [](clock::time_point a, clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    const auto t0 = clock::now();
    const double p0 = products_.seconds();
    clock::time_point t1, t2;
    {  // as the trainer's step: bf16 reads the weights AdamW rounded (a first pass at step 0)
      if (precision_ == GemmPrecision::bf16 && steps_taken_ == 0) shadow_.refresh(weight_matrix_spans(cfg_, params_));
      const GemmPrecisionScope products(precision_, &shadow_);
      model_forward(cfg_, params_, ids_.data(), B_, S_, cache_);
      t1 = clock::now();
      model_backward(cfg_, params_, cache_, targets_.data(), grads_, GradMode::overwrite);  // as the first micro-batch
      t2 = clock::now();
    }
    // As the trainer: clipping scales the gradients as AdamW reads them; AdamW rounds the
    // bf16 weights as it updates.
    const float clip = clip_scale(grad_norm(cfg_, grads_), 1.0);
    const auto t3 = clock::now();
    opt_.update(cfg_, params_, grads_, 1e-3, {}, precision_ == GemmPrecision::bf16 ? &shadow_ : nullptr, clip);
    const auto t4 = clock::now();
    ++steps_taken_;
    if (record) {
      times_.push_back(seconds(t0, t4));
      forward_s_.push_back(seconds(t0, t1));
      backward_s_.push_back(seconds(t1, t2));
      products_s_.push_back(products_.seconds() - p0);
      norm_s_.push_back(seconds(t2, t3));
      adamw_s_.push_back(seconds(t3, t4));
      RoutingStats all;
      for (const auto& s : routing_stats_of(cfg_, cache_)) all.add(s);
      ffn_per_token_ = all.ffn_experts_per_token();
    }
  }

  // The recorded steps' seconds, in the order taken (a round's step of each run shares an index).
  const std::vector<double>& step_seconds() const { return times_; }

  json summary() const {
    const double med = median(times_);
    const double n = double(params_.numel(cfg_));
    return {{"params", int64_t(n)}, {"tokens_per_s", double(B_ * S_) / med}, {"step_s_median", med},
            {"phase_ms_median", {{"forward", median(forward_s_) * 1e3}, {"backward", median(backward_s_) * 1e3},
                                 {"grad_norm", median(norm_s_) * 1e3}, {"adamw", median(adamw_s_) * 1e3},
                                 {"products", median(products_s_) * 1e3}}},
            {"ffn_experts_per_token", ffn_per_token_},
            {"planned_mb", {{"params", n * 4 / 1e6}, {"grads", n * 4 / 1e6}, {"adam_moments", n * 8 / 1e6},
                            {"activations", cache_mb(cache_)}}}};
  }

 private:
  ModelConfig cfg_;
  int64_t B_, S_;
  GemmPrecision precision_;
  const ProductClock& products_;
  Rng rng_;
  ModelParams<float> params_, grads_;
  AdamW opt_;
  ModelCache<float> cache_;
  Bf16Shadow shadow_;
  std::vector<int32_t> ids_, targets_;
  int64_t steps_taken_ = 0;
  std::vector<double> times_, forward_s_, backward_s_, norm_s_, adamw_s_, products_s_;
  double ffn_per_token_ = 0;
};

// Warm-up steps: bf16 products build a oneDNN kernel for each new padded shape in their
// first steps (~0.5 ms each), a cost a run of thousands of steps does not see.
constexpr int64_t kWarmup = 8;

}  // namespace

int main(int argc, char** argv) try {
  const Flags f(argc, argv);
  if (f.has("help")) {
    std::printf("train_bench: training tokens/s, MoE++ vs vanilla twin vs PyTorch eager\n"
                "  --preset small --steps 20 --batch 8 --seq 128 --threads 2 --pin 1 --vocab 4000 --torch 1 --bf16 1 --json FILE\n");
    return 0;
  }
  const std::string preset = f.get("preset", "small");
  const int64_t steps = f.get_int("steps", 20), B = f.get_int("batch", 8), S = f.get_int("seq", 128);
  const int threads = int(f.get_int("threads", 2));
  const int64_t vocab = f.get_int("vocab", 4000);
  setup_threads(f, threads);
  const bool bf16 = f.get_int("bf16", 1) && gemm_bf16_available();
  json out = {{"preset", preset}, {"batch", B}, {"seq", S}, {"threads", threads}, {"steps", steps}};
  // Every run steps once a round, the order rotating, and each ratio below is also taken
  // round by round (the median of the rounds' ratios): the VM's speed drifts by up to 2x
  // over a minute, which runs taken one after another would read as a difference.
  const ProductClock products;
  struct Entry {
    const char* key;
    bool bf16;
    std::unique_ptr<TrainingRun> run;
  };
  std::vector<Entry> runs;
  for (bool vanilla : {false, true}) {
    const ModelConfig cfg = ModelConfig::preset(preset, vocab, vanilla);
    for (bool b : {false, true}) {
      if (b && !bf16) continue;
      std::fprintf(stderr, "train_bench: %s %s, %s products: warming up ...\n", preset.c_str(),
                   vanilla ? "vanilla" : "MoE++", b ? "bf16" : "f32");
      runs.push_back({vanilla ? "vanilla" : "moepp", b,
                      std::make_unique<TrainingRun>(cfg, B, S, b ? GemmPrecision::bf16 : GemmPrecision::f32, products)});
      for (int64_t w = 0; w < kWarmup; ++w) runs.back().run->step(false);
      // Memory is MoE++'s at f32 alone: the runs after it add theirs to the process.
      if (runs.size() == 1) out["moepp"]["peak_rss_mb_so_far"] = peak_rss_mb();
    }
  }
  std::fprintf(stderr, "train_bench: %lld rounds of %zu interleaved runs ...\n", (long long)steps, runs.size());
  for (int64_t r = 0; r < steps; ++r)
    for (size_t j = 0; j < runs.size(); ++j) {
      runs[(size_t(r) + j) % runs.size()].run->step(true);
    }
  const auto entry = [&](const char* key, bool b) -> const Entry& {
    for (const auto& e : runs)
      if (std::string(e.key) == key && e.bf16 == b) return e;
    throw Error("train_bench: no run " + std::string(key));
  };
  // The median over rounds of num's step time over den's: den's speed over num's.
  const auto paired = [](const Entry& num, const Entry& den) {
    std::vector<double> ratio;
    const auto &a = num.run->step_seconds(), &b = den.run->step_seconds();
    for (size_t r = 0; r < a.size(); ++r) ratio.push_back(a[r] / b[r]);
    return median(ratio);
  };
  for (const auto& e : runs) {
    json& slot = e.bf16 ? out["bf16"][e.key] : out[e.key];
    const json summary = e.run->summary();
    for (auto it = summary.begin(); it != summary.end(); ++it) slot[it.key()] = it.value();
  }
  out["moepp_over_vanilla_paired"] = paired(entry("vanilla", false), entry("moepp", false));
  if (bf16)
    for (const char* k : {"moepp", "vanilla"}) out["bf16"][k]["speedup_paired"] = paired(entry(k, false), entry(k, true));
  if (f.get_int("torch", 1)) {
    for (const char* precision : bf16 ? std::vector<const char*>{"f32", "bf16"} : std::vector<const char*>{"f32"}) {
      const std::string cmd = "/usr/bin/python3 " MOEPP_BENCH_DIR "/train_torch.py --preset " + preset + " --steps " +
                              std::to_string(steps) + " --batch " + std::to_string(B) + " --seq " + std::to_string(S) +
                              " --threads " + std::to_string(threads) + " --vocab " + std::to_string(vocab) +
                              " --precision " + precision;
      std::fprintf(stderr, "train_bench: pytorch: %s\n", cmd.c_str());
      try {
        out[std::string(precision) == "f32" ? "torch" : "torch_bf16"] = json::parse(run_capture(cmd));
      } catch (...) {
        std::fprintf(stderr, "train_bench: pytorch peer unavailable; skipped\n");
        break;
      }
    }
  }
  const auto& pp = out["moepp"];
  const auto& va = out["vanilla"];
  std::printf("\ntraining step, preset %s, batch %lld x seq %lld, f32, %d threads (median of %lld steps,\n"
              "the runs interleaved a step at a time)\n",
              preset.c_str(), (long long)B, (long long)S, threads, (long long)steps);
  std::printf("%-10s %12s %12s %10s", "model", "params", "tokens/s", "FFN/tok");
  const bool torch = out.contains("torch") && out["torch"].contains("moepp");
  if (torch) std::printf(" %14s %10s", "torch tok/s", "vs torch");
  std::printf("\n");
  for (const char* k : {"moepp", "vanilla"}) {
    const auto& r = out[k];
    std::printf("%-10s %12lld %12.0f %10.3f", k, (long long)r["params"].get<int64_t>(), r["tokens_per_s"].get<double>(),
                r["ffn_experts_per_token"].get<double>());
    if (torch)
      std::printf(" %14.0f %9.2fx", out["torch"][k]["tokens_per_s"].get<double>(),
                  r["tokens_per_s"].get<double>() / out["torch"][k]["tokens_per_s"].get<double>());
    std::printf("\n");
  }
  std::printf("MoE++ / vanilla: %.2fx (median of the rounds' ratios: %.2fx)\n",
              pp["tokens_per_s"].get<double>() / va["tokens_per_s"].get<double>(),
              out["moepp_over_vanilla_paired"].get<double>());
  if (bf16) {
    const bool tb = out.contains("torch_bf16") && out["torch_bf16"].contains("moepp");
    std::printf("\nbf16 products (train --precision bf16: operands rounded to bf16, f32 accumulation, f32 master\n"
                "weights and AdamW; weights rounded once per step, inside the step's time)\n");
    std::printf("%-10s %12s %12s %10s %11s", "model", "f32 tok/s", "bf16 tok/s", "bf16/f32", "by rounds");
    if (tb) std::printf(" %16s %10s", "torch bf16 tok/s", "vs torch");
    std::printf("\n");
    for (const char* k : {"moepp", "vanilla"}) {
      const double a = out[k]["tokens_per_s"].get<double>(), b = out["bf16"][k]["tokens_per_s"].get<double>();
      std::printf("%-10s %12.0f %12.0f %9.2fx %10.2fx", k, a, b, b / a, out["bf16"][k]["speedup_paired"].get<double>());
      if (tb) {
        const double t = out["torch_bf16"][k]["tokens_per_s"].get<double>();
        std::printf(" %16.0f %9.2fx", t, b / t);
      }
      std::printf("\n");
    }
  }
  // Where a step's time goes: forward and backward, and within them the products (what
  // bf16 speeds up); the gradient norm and AdamW (which also rounds the bf16 weights).
  std::printf("\nstep phases, median ms: forward / backward (products in them) / grad norm / AdamW\n");
  for (const char* k : {"moepp", "vanilla"})
    for (const bool b : {false, true}) {
      if (b && !bf16) continue;
      const auto& ph = (b ? out["bf16"][k] : out[k])["phase_ms_median"];
      std::printf("%-10s %-5s %7.1f %9.1f (%5.1f) %7.1f %7.1f\n", k, b ? "bf16" : "f32", ph["forward"].get<double>(),
                  ph["backward"].get<double>(), ph["products"].get<double>(), ph["grad_norm"].get<double>(),
                  ph["adamw"].get<double>());
    }
  if (bf16) {
    // bf16/f32 of the whole step is bounded by the part bf16 leaves alone: the step outside
    // the products (attention, norms, routing, elementwise work, the optimizer) runs the
    // same arithmetic in both. "if bf16 = f32 / 2": the step ratio were bf16 products
    // exactly twice as fast as f32's (the bf16 GEMM rate over f32's on AVX-512 BF16) and
    // the rest as measured in the bf16 run.
    std::printf("\nbf16 against f32, medians of the phases above (ms): products | rest of the step | step ratio\n");
    std::printf("%-10s %9s %9s %8s | %9s %9s | %9s %16s\n", "model", "f32", "bf16", "speedup", "f32", "bf16", "measured",
                "if bf16 = f32 / 2");
    for (const char* k : {"moepp", "vanilla"}) {
      const auto total = [](const json& ph) {
        return ph["forward"].get<double>() + ph["backward"].get<double>() + ph["grad_norm"].get<double>() +
               ph["adamw"].get<double>();
      };
      const auto& a = out[k]["phase_ms_median"];
      const auto& b = out["bf16"][k]["phase_ms_median"];
      const double pa = a["products"].get<double>(), pb = b["products"].get<double>();
      const double ra = total(a) - pa, rb = total(b) - pb;
      std::printf("%-10s %9.1f %9.1f %7.2fx | %9.1f %9.1f | %8.2fx %15.2fx\n", k, pa, pb, pa / pb, ra, rb,
                  out["bf16"][k]["tokens_per_s"].get<double>() / out[k]["tokens_per_s"].get<double>(),
                  (pa + ra) / (pa / 2 + rb));
    }
  }
  const auto& pm = pp["planned_mb"];
  const double planned = pm["params"].get<double>() + pm["grads"].get<double>() + pm["adam_moments"].get<double>() +
                         pm["activations"].get<double>();
  std::printf("memory (MoE++): peak RSS %.0f MB; planned %.0f MB = params %.0f + grads %.0f + AdamW %.0f + activations %.0f\n",
              pp["peak_rss_mb_so_far"].get<double>(), planned, pm["params"].get<double>(), pm["grads"].get<double>(),
              pm["adam_moments"].get<double>(), pm["activations"].get<double>());
  const std::string path = f.get("json", "");
  if (!path.empty()) std::ofstream(path) << out.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
