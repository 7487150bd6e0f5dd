// bench/moe_layer: one MoE++ layer with the released MoE++7B layer shape against its
// vanilla twin, f32 (and bf16 products, where the CPU has them), in the same run:
//   - forward and forward+backward tokens/s, for a router bias that sends a fraction z of
//     the slots to zero-computation experts; MoE++/vanilla against the ideal 1/(1-z);
//   - forward+backward again with bf16 products (train --precision bf16) against f32, with
//     and without the pass that rounds the experts to bf16 (timed apart: the trainer
//     writes that copy inside AdamW's pass, once per optimizer step, not per call);
//   - the forward again with the FFN experts packed once as f32 column panels (what
//     inference runs: kernels/gemm_panels.h), and the time the packing took;
//   - the FFN grouped GEMMs' GFLOP/s as a fraction of one plain GEMM of the same total
//     shape through the same provider;
//   - where the prepacked forward's time goes, and the backward's weight-gradient GEMMs;
//   - the machine's f32 FMA peak, and what 2x the PyTorch layer would need of it;
//   - the same layers in PyTorch (bench/moe_layer_torch.py) as the peer baseline.
// Forward and forward+backward throughputs are medians of rounds that alternate between
// the variants, so the drift of a shared machine over the run cancels out of the ratios.
// The backward writes the parameter gradients as the trainer's first micro-batch of a step
// does (GradMode::overwrite: no zeroing pass, the experts' gradients written, not added).
// Usage: moe_layer_bench [--tokens 2048] [--hidden 1536] [--intermediate 4096]
//        [--experts 16] [--threads 2] [--pin 1] [--repeats 3] [--z 0.2,0.5,0.8] [--torch 0|1]
//        [--json FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "moe_twins.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "kernels/gemm.h"
#include "kernels/gemm_panels.h"
#include "kernels/mixed_precision.h"
#include "kernels/swiglu.h"
#include "core/error.h"
#include "moe/balance_loss.h"
#include "moe/dispatch.h"
#include "moe/moe_layer.h"

using namespace moepp;
using namespace moepp::bench;
using json = nlohmann::json;

namespace {

struct Setup {
  int64_t T, D, I;
  int N, threads, repeats;
};

void fill(Tensor<float>& t, Rng& rng, double std) {
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = float(rng.normal() * std);
}

// GFLOP/s of one up-projection-shaped GEMM with M rows: the per-expert GEMM efficiency a
// layer gets when each FFN expert receives about M rows.
// With `panels`, the same product through the panel kernel on prepacked weights.
double up_gemm_gflops(const Setup& s, const MoeParams<float>& w, int64_t M, const PanelMatrix* panels = nullptr) {
  M = std::max<int64_t>(1, M);
  Tensor<float> a({M, s.D}), c({M, 2 * s.I});
  for (int64_t i = 0; i < a.numel(); ++i) a[i] = 0.01f * float(i % 13);
  const double t = median_seconds(s.repeats + 2, [&] {
    if (panels) {
      panel_linear(a.data(), M, s.D, *panels, c.data(), 2 * s.I);
    } else {
      gemm<float>(Trans::N, Trans::T, M, 2 * s.I, s.D, 1.0f, a.data(), s.D, w.up[0].data(), s.D, 0.0f, c.data(),
                  2 * s.I);
    }
  });
  return 2.0 * double(M) * double(2 * s.I) * double(s.D) / t / 1e9;
}

struct Timing {
  double fwd_packed_s = 0, zc = 0, ffn_per_token = 0;
  int64_t rows_min = 0, rows_max = 0;  // the fewest and most rows an FFN expert received
  // Where the prepacked forward's time goes (seconds): the router; the dispatch plan,
  // statistics, balance loss and gather of FFN rows; the FFN experts (GEMMs + SwiGLU);
  // the rest (combine with the copy and constant experts) is total - these.
  double router_s = 0, dispatch_s = 0, ffn_s = 0;
  // The backward's weight-gradient GEMMs alone (dUp = dU^T X, dDown = dO^T H, all FFN
  // experts, at this run's rows): their reduction runs over an expert's rows only.
  double dweights_s = 0;
};

Timing time_layer(const Setup& s, const MoeConfig& cfg, MoeParams<float>& w, MoeParams<float>& g,
                  const Tensor<float>& x, const Tensor<float>& z_prev,
                  const std::vector<PackedMatrix>& packed_up, const std::vector<PackedMatrix>& packed_down) {
  MoeCache<float> cache;
  Tensor<float> y({s.T, s.D});
  const float* zp = cfg.num_zero_compute() ? z_prev.data() : nullptr;
  Timing t;  // forward and forward+backward: later, in rounds alternating between the variants
  MoeWeights<float> pw = MoeWeights<float>::of(w);  // inference: the same experts, prepacked
  for (size_t e = 0; e < packed_up.size(); ++e) {
    pw.up[e] = MatrixView<float>::of_packed(packed_up[e]);
    pw.down[e] = MatrixView<float>::of_packed(packed_down[e]);
  }
  MOEPP_CHECK(cfg.input_scale() == 1.0, "the breakdown gathers x unscaled");
  // The whole forward and its stages, each timed once per round so that they see the same
  // machine; medians.
  moe_forward(cfg, pw, x.data(), s.T, zp, cache, y.data());  // warm-up, fills the cache
  std::vector<double> total, router, dispatch, ffn;
  for (int r = 0; r < s.repeats + 2; ++r) {
    total.push_back(seconds_of([&] { moe_forward(cfg, pw, x.data(), s.T, zp, cache, y.data()); }));
    router.push_back(seconds_of([&] { router_forward(cfg, w, x.data(), s.T, zp, cache.router); }));
    dispatch.push_back(seconds_of([&] {
      plan_dispatch(cfg, cache.router.idx.data(), s.T, cache.plan);
      cache.stats = routing_stats(cfg, cache.plan);
      cache.balance_loss = balance_loss_forward(cfg, cache.router.p.data(), cache.router.idx.data(), s.T, cache.f);
      gather_ffn_rows(cache.plan, x.data(), s.D, cache.ffn.x.data());
    }));
    ffn.push_back(seconds_of([&] { ffn_experts_forward(cfg, pw, cache.plan, cache.ffn); }));
  }
  t.fwd_packed_s = median(total);
  t.router_s = median(router);
  t.dispatch_s = median(dispatch);
  t.ffn_s = median(ffn);
  t.dweights_s = median_seconds(s.repeats, [&] {
    // The backward's lists (experts/ffn.cpp); u and o stand in for dU and dO: same shapes.
    const auto& f = cache.ffn;
    std::vector<GemmProblem<float>> dup, ddown;
    for (int e = 0; e < cfg.num_ffn; ++e) {
      const int64_t r0 = cache.plan.offsets[size_t(e)], M = cache.plan.rows(e);
      if (M == 0) continue;
      dup.push_back({2 * s.I, s.D, M, f.u.data() + r0 * 2 * s.I, 2 * s.I, f.x.data() + r0 * s.D, s.D,
                     g.up[size_t(e)].data(), s.D, 0.0f});
      ddown.push_back({s.D, s.I, M, f.o.data() + r0 * s.D, s.D, f.h.data() + r0 * s.I, s.I,
                       g.down[size_t(e)].data(), s.I, 0.0f});
    }
    gemm_grouped<float>(Trans::T, Trans::N, ddown);
    gemm_grouped<float>(Trans::T, Trans::N, dup);
  });
  t.zc = 1.0 - cache.stats.share(ExpertKind::ffn);
  t.ffn_per_token = cache.stats.ffn_experts_per_token();
  t.rows_min = cache.plan.rows(0);
  for (int e = 0; e < cfg.num_ffn; ++e) {
    t.rows_min = std::min(t.rows_min, cache.plan.rows(e));
    t.rows_max = std::max(t.rows_max, cache.plan.rows(e));
  }
  return t;
}

// A number from a results object, or `fallback` where the run did not produce it (the
// vanilla row has no speedups).
double value_or(const json& r, const char* key, double fallback) {
  return r.contains(key) ? r[key].get<double>() : fallback;
}

json breakdown_json(const Timing& t) {
  return {{"total", 1e3 * t.fwd_packed_s}, {"router", 1e3 * t.router_s}, {"dispatch_gather", 1e3 * t.dispatch_s},
          {"ffn", 1e3 * t.ffn_s}, {"combine_rest", 1e3 * (t.fwd_packed_s - t.router_s - t.dispatch_s - t.ffn_s)},
          {"dweight_gemms", 1e3 * t.dweights_s}};
}

}  // namespace

int main(int argc, char** argv) try {
  const Flags flags(argc, argv);
  if (flags.has("help")) {
    std::printf(
        "moe_layer_bench: MoE++ layer vs its vanilla twin vs PyTorch, f32\n"
        "  forward (as trained, and on experts prepacked as f32 panels), forward+backward,\n"
        "  GEMM efficiencies, a time breakdown, the FMA peak; 5-8 minutes at these sizes\n"
        "  --tokens N (2048) --hidden D (1536) --intermediate I (4096) --experts N (16)\n"
        "  --threads N (2) --pin 0|1 (1: one thread per CPU, pinned, when they use every CPU)\n"
        "  --repeats N (3; rounds = N + 2) --z LIST (0.2,0.5,0.8)\n"
        "  --torch 0|1 (1: run bench/moe_layer_torch.py with Debian's python3-torch)\n"
        "  --json FILE  also write the results as JSON\n");
    return 0;
  }
  Setup s;
  s.T = flags.get_int("tokens", 2048);
  s.D = flags.get_int("hidden", 1536);
  s.I = flags.get_int("intermediate", 4096);
  s.N = int(flags.get_int("experts", 16));
  s.threads = int(flags.get_int("threads", 2));
  s.repeats = int(flags.get_int("repeats", 3));
  const std::vector<double> targets = flags.get_list("z", {0.2, 0.5, 0.8});
  setup_threads(flags, s.threads);

  const MoeConfig van_cfg = released_moe_layer(s.D, s.I, s.N, false), pp_cfg = released_moe_layer(s.D, s.I, s.N, true);
  Rng rng(1234);
  auto van = MoeParams<float>::zeros(van_cfg);
  auto pp = MoeParams<float>::zeros(pp_cfg);
  for (auto& t : van.up) fill(t, rng, 0.02);
  for (auto& t : van.down) fill(t, rng, 0.02);
  fill(van.wg, rng, 0.02);
  // The twin shares the FFN experts and the FFN rows of the router.
  for (int64_t i = 0; i < van.wg.numel(); ++i) pp.wg[i] = van.wg[i];
  for (int64_t i = van.wg.numel(); i < pp.wg.numel(); ++i) pp.wg[i] = float(rng.normal() * 0.02);
  for (auto& t : pp.constant) fill(t, rng, 0.02);
  for (auto& t : pp.constant_wg) fill(t, rng, 0.02);
  auto van_grad = MoeParams<float>::zeros(van_cfg);
  Tensor<float> x({s.T, s.D}), dy({s.T, s.D}), ones({s.T, int64_t(pp_cfg.num_experts())});
  fill(x, rng, 1.0);
  fill(dy, rng, 1.0);
  for (int64_t i = 0; i < ones.numel(); ++i) ones[i] = 1.0f;

  std::fprintf(stderr, "moe_layer_bench: T=%lld D=%lld I=%lld N=%d top-2, f32, %d threads, gemm=%s\n",
               (long long)s.T, (long long)s.D, (long long)s.I, s.N, s.threads, gemm_provider());
  json out;
  out["setup"] = {{"tokens", s.T}, {"hidden", s.D}, {"intermediate", s.I}, {"ffn_experts", s.N},
                  {"threads", s.threads}, {"repeats", s.repeats}, {"gemm_provider", gemm_provider()}};

  double peak = fma_peak_gflops(s.threads);  // again at the end: the best of both

  // 0. The FFN experts packed once as f32 panels, shared by the twins (inference forward).
  std::vector<PackedMatrix> packed_up, packed_down;
  const double pack_s = median_seconds(1, [&] {
    packed_up.clear();
    packed_down.clear();
    for (int e = 0; e < s.N; ++e) {
      packed_up.push_back(PackedMatrix::pack(van.up[size_t(e)].data(), 2 * s.I, s.D, WeightType::f32));
      packed_down.push_back(PackedMatrix::pack(van.down[size_t(e)].data(), s.D, s.I, WeightType::f32));
    }
  });
  std::fprintf(stderr, "  packed %d FFN experts as f32 panels in %.2f s\n", s.N, pack_s);
  out["pack_seconds"] = pack_s;

  // 1. vanilla
  std::fprintf(stderr, "  vanilla ...\n");
  const Timing v = time_layer(s, van_cfg, van, van_grad, x, ones, packed_up, packed_down);
  json runs = json::array();
  runs.push_back({{"rows_per_ffn_expert", v.ffn_per_token * double(s.T) / s.N}, {"rows_min", v.rows_min},
                  {"rows_max", v.rows_max}, {"variant", "vanilla"}, {"z", 0.0},
                  {"breakdown_ms", breakdown_json(v)}, {"ffn_experts_per_token", v.ffn_per_token}});

  // 2. FFN grouped GEMMs vs one plain GEMM of the same total shape (vanilla routing).
  {
    MoeCache<float> cache;
    Tensor<float> y({s.T, s.D});
    moe_forward<float>(van_cfg, van, x.data(), s.T, nullptr, cache, y.data());
    const int64_t R = cache.plan.ffn_rows();
    const MoeWeights<float> van_view = MoeWeights<float>::of(van);
    const double flops = 6.0 * double(R) * double(s.D) * double(s.I);
    const double grouped = median_seconds(s.repeats, [&] { ffn_experts_forward(van_cfg, van_view, cache.plan, cache.ffn); });
    Tensor<float> u({R, 2 * s.I}), h({R, s.I}), o({R, s.D});
    auto plain_with = [&](bool cblas) {
      return median_seconds(s.repeats, [&] {
        if (cblas) {
          gemm_f32_cblas(Trans::N, Trans::T, R, 2 * s.I, s.D, 1.0f, cache.ffn.x.data(), s.D, van.up[0].data(), s.D, 0.0f, u.data(), 2 * s.I);
        } else {
          gemm<float>(Trans::N, Trans::T, R, 2 * s.I, s.D, 1.0f, cache.ffn.x.data(), s.D, van.up[0].data(), s.D, 0.0f, u.data(), 2 * s.I);
        }
        swiglu_forward(u.data(), h.data(), R, s.I);
        if (cblas) {
          gemm_f32_cblas(Trans::N, Trans::T, R, s.D, s.I, 1.0f, h.data(), s.I, van.down[0].data(), s.I, 0.0f, o.data(), s.D);
        } else {
          gemm<float>(Trans::N, Trans::T, R, s.D, s.I, 1.0f, h.data(), s.I, van.down[0].data(), s.I, 0.0f, o.data(), s.D);
        }
      });
    };
    const double plain = plain_with(false);
    out["ffn_gemm"] = {{"rows", R}, {"grouped_gflops", flops / grouped / 1e9}, {"plain_gflops", flops / plain / 1e9},
                       {"grouped_over_plain", plain / grouped}, {"provider", gemm_provider()}};
    Tensor<float> probe({1, 1});
    if (gemm_f32_cblas(Trans::N, Trans::N, 1, 1, 1, 1.0f, probe.data(), 1, probe.data(), 1, 0.0f, probe.data(), 1) &&
        std::string(gemm_provider()) != "cblas") {
      out["ffn_gemm"]["cblas_plain_gflops"] = flops / plain_with(true) / 1e9;
    }
  }

  const double van_rows_per_expert = v.ffn_per_token * double(s.T) / s.N;
  const double van_gemm = up_gemm_gflops(s, van, int64_t(std::lround(van_rows_per_expert)));
  const double van_panel = up_gemm_gflops(s, van, int64_t(std::lround(van_rows_per_expert)), &packed_up[0].f32);

  // 3. MoE++ at each target z (its FFN experts are the vanilla ones, moved in).
  std::swap(pp.up, van.up);
  std::swap(pp.down, van.down);
  auto pp_grad = MoeParams<float>::zeros(pp_cfg);
  std::vector<Tensor<float>> gate_maps;  // the calibrated router bias, per target z
  for (double target : targets) {
    const double got = calibrate_zc(pp_cfg, pp, x, ones, s.T, target);
    gate_maps.push_back(pp.gate_map.clone());
    std::fprintf(stderr, "  moe++ z=%.2f (target %.2f) ...\n", got, target);
    const Timing t = time_layer(s, pp_cfg, pp, pp_grad, x, ones, packed_up, packed_down);
    const double rows_per_expert = t.ffn_per_token * double(s.T) / s.N;
    const int64_t rows = int64_t(std::lround(rows_per_expert));
    const double gemm_eff = up_gemm_gflops(s, pp, rows) / van_gemm;
    const double panel_eff = up_gemm_gflops(s, pp, rows, &packed_up[0].f32) / van_panel;
    runs.push_back({{"rows_per_ffn_expert", rows_per_expert}, {"rows_min", t.rows_min}, {"rows_max", t.rows_max},
                    {"gemm_efficiency_vs_vanilla_rows", gemm_eff},
                    {"panel_efficiency_vs_vanilla_rows", panel_eff}, {"variant", "moepp"}, {"target_z", target}, {"z", t.zc},
                    {"breakdown_ms", breakdown_json(t)},
                    {"ffn_experts_per_token", t.ffn_per_token},
                    {"ideal_speedup", 1.0 / (1.0 - t.zc)}});
  }

  // 3b. Forward and forward+backward, in rounds that alternate between the variants
  // (vanilla, then MoE++ at each z; the forward as trained and prepacked), so that the
  // drift of a shared machine over the run cancels out of the ratios. These medians are
  // the fwd and fwd+bwd columns.
  {
    const size_t V = runs.size();
    std::vector<std::vector<double>> fwd(V), fwd_packed(V), fwdbwd(V);
    std::vector<MoeCache<float>> caches(V);
    MoeBackwardScratch<float> backward_scratch;
    Tensor<float> y({s.T, s.D}), dx({s.T, s.D}), dzp({s.T, int64_t(pp_cfg.num_experts())});
    // Forward alone (as trained or prepacked), or forward then backward (as trained).
    // With bf16, the products round their operands to bf16 (train --precision bf16): the
    // experts are rounded into a shadow once per call, a pass timed apart as well (the
    // trainer makes no such pass: AdamW writes the copy as it updates, once per step).
    const bool bf16 = gemm_bf16_available();
    std::vector<std::vector<double>> fwdbwd_bf16(V), rounding_bf16(V);
    Bf16Shadow shadow;
    double rounding_s = 0;  // the last bf16 call's rounding of the experts
    auto layer_seconds = [&](size_t i, bool prepacked, bool backward, bool mixed = false) {
      const bool vanilla = i == 0;
      MoeParams<float>& w = vanilla ? van : pp;
      if (vanilla) {
        std::swap(pp.up, van.up);  // the twins share one set of experts
        std::swap(pp.down, van.down);
      } else {
        std::copy(gate_maps[i - 1].data(), gate_maps[i - 1].data() + pp.gate_map.numel(), pp.gate_map.data());
      }
      MoeWeights<float> view = MoeWeights<float>::of(w);
      if (prepacked)
        for (size_t e = 0; e < packed_up.size(); ++e) {
          view.up[e] = MatrixView<float>::of_packed(packed_up[e]);
          view.down[e] = MatrixView<float>::of_packed(packed_down[e]);
        }
      const MoeConfig& cfg = vanilla ? van_cfg : pp_cfg;
      const float* zp = vanilla ? nullptr : ones.data();
      auto call = [&] {
        std::optional<GemmPrecisionScope> scope;
        if (mixed) {
          std::vector<Bf16Shadow::Span> spans;
          for (const auto* list : {&w.up, &w.down})
            for (const auto& t : *list) spans.emplace_back(t.data(), t.numel());
          rounding_s = seconds_of([&] { shadow.refresh(spans); });
          scope.emplace(GemmPrecision::bf16, &shadow);
        }
        moe_forward(cfg, view, x.data(), s.T, zp, caches[i], y.data());
        if (backward)
          moe_backward<float>(cfg, w, x.data(), zp, caches[i], dy.data(), nullptr, 0.01, dx.data(),
                              zp ? dzp.data() : nullptr, vanilla ? van_grad : pp_grad, backward_scratch,
                              GradMode::overwrite);
      };
      // Each timed call follows an untimed one of its own kind: the steady state of a layer
      // run again and again, not the write-backs and cold lines of whatever mode or twin ran
      // just before (those cost MoE++'s short prepacked forward 3-7%, vanilla's 1-2%).
      call();
      const double sec = seconds_of(call);
      if (vanilla) {
        std::swap(pp.up, van.up);
        std::swap(pp.down, van.down);
      }
      return sec;
    };
    const int rounds = s.repeats + 2;
    std::fprintf(stderr, "  forward and forward+backward, %d alternating rounds ...\n", rounds);
    for (int r = -1; r < rounds; ++r)  // round -1 warms up
      for (size_t i = 0; i < V; ++i) {
        const double a = layer_seconds(i, false, false), b = layer_seconds(i, true, false);
        const double c = layer_seconds(i, false, true);
        const double d = bf16 ? layer_seconds(i, false, true, true) : 0.0;
        if (r >= 0) {
          fwd[i].push_back(a);
          fwd_packed[i].push_back(b);
          fwdbwd[i].push_back(c);
          fwdbwd_bf16[i].push_back(d);
          rounding_bf16[i].push_back(rounding_s);  // (d's own: it ran last; 0 without bf16)
        }
      }
    out["forward_rounds"] = rounds;
    for (size_t i = 0; i < V; ++i) {
      auto& r = runs[i];
      r["fwd_tokens_per_s"] = double(s.T) / median(fwd[i]);
      r["fwd_packed_tokens_per_s"] = double(s.T) / median(fwd_packed[i]);
      r["fwdbwd_tokens_per_s"] = double(s.T) / median(fwdbwd[i]);
      if (bf16) {
        r["fwdbwd_bf16_tokens_per_s"] = double(s.T) / median(fwdbwd_bf16[i]);
        r["fwdbwd_bf16_over_f32"] = median(fwdbwd[i]) / median(fwdbwd_bf16[i]);
        // The same without the experts' rounding pass, which the trainer does not make
        // per forward+backward: it writes the bf16 copy inside AdamW's pass, once per
        // optimizer step (however many micro-batches --accum gives it).
        std::vector<double> products(fwdbwd_bf16[i].size());
        for (size_t k = 0; k < products.size(); ++k) products[k] = fwdbwd_bf16[i][k] - rounding_bf16[i][k];
        r["bf16_rounding_ms"] = median(rounding_bf16[i]) * 1e3;
        r["fwdbwd_bf16_products_tokens_per_s"] = double(s.T) / median(products);
        r["fwdbwd_bf16_products_over_f32"] = median(fwdbwd[i]) / median(products);
      }
      if (i > 0) {
        r["fwdbwd_speedup"] = median(fwdbwd[0]) / median(fwdbwd[i]);
        r["fwd_speedup"] = median(fwd[0]) / median(fwd[i]);
        r["fwd_packed_speedup"] = median(fwd_packed[0]) / median(fwd_packed[i]);
      }
    }
  }
  out["runs"] = runs;

  // 4. PyTorch peer, same shapes, threads and targets.
  if (flags.get_int("torch", 1)) {
    std::string zs;
    for (double z : targets) {
      if (!zs.empty()) zs += ",";
      zs += std::to_string(z);
    }
    const std::string cmd = "/usr/bin/python3 " MOEPP_BENCH_DIR "/moe_layer_torch.py --T " + std::to_string(s.T) +
                            " --D " + std::to_string(s.D) + " --I " + std::to_string(s.I) + " --N " + std::to_string(s.N) +
                            " --threads " + std::to_string(s.threads) + " --repeats " + std::to_string(s.repeats) +
                            " --target-z " + zs;
    std::fprintf(stderr, "  pytorch: %s\n", cmd.c_str());
    const std::string text = run_capture(cmd);
    try {
      out["torch"] = json::parse(text);
    } catch (...) {
      std::fprintf(stderr, "  pytorch peer unavailable (needs Debian's python3-torch); skipped\n");
    }
  }

  // Table.
  const auto& fg = out["ffn_gemm"];
  std::printf("\nMoE layer T=%lld D=%lld I=%lld, %d FFN experts, top-2, f32, %d threads, GEMM provider %s\n",
              (long long)s.T, (long long)s.D, (long long)s.I, s.N, s.threads, gemm_provider());
  std::printf("FFN GEMMs: grouped %.0f GFLOP/s vs one plain GEMM of the same total shape %.0f GFLOP/s: %.1f%%",
              fg["grouped_gflops"].get<double>(), fg["plain_gflops"].get<double>(),
              100.0 * fg["grouped_over_plain"].get<double>());
  if (fg.contains("cblas_plain_gflops")) std::printf(" (CBLAS plain: %.0f GFLOP/s)", fg["cblas_plain_gflops"].get<double>());
  std::printf("\n\n%-8s %6s %8s %6s | %12s %14s | %9s %9s %6s %9s %8s", "variant", "z", "FFN/tok", "rows/e",
              "fwd tok/s", "fwd+bwd tok/s", "fwd x", "fwd+bwd x", "ideal", "fwd/ideal", "GEMM eff");
  const bool torch = out.contains("torch") && out["torch"].contains("runs");
  if (torch) std::printf(" | %12s %12s %8s", "torch fwd", "torch f+b", "vs torch");
  std::printf("\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    const double sp = value_or(r, "fwd_speedup", 1.0);
    const double spb = value_or(r, "fwdbwd_speedup", 1.0);
    const double ideal = value_or(r, "ideal_speedup", 1.0);
    const double eff = value_or(r, "gemm_efficiency_vs_vanilla_rows", 1.0);
    std::printf("%-8s %6.3f %8.3f %6.0f | %12.0f %14.0f | %9.2f %9.2f %6.2f %9.2f %8.2f", r["variant"].get<std::string>().c_str(),
                r["z"].get<double>(), r["ffn_experts_per_token"].get<double>(), r["rows_per_ffn_expert"].get<double>(),
                r["fwd_tokens_per_s"].get<double>(), r["fwdbwd_tokens_per_s"].get<double>(), sp, spb, ideal, sp / ideal, eff);
    if (torch && i < out["torch"]["runs"].size()) {
      const auto& tr = out["torch"]["runs"][i];
      std::printf(" | %12.0f %12.0f %7.2fx", tr["fwd_tokens_per_s"].get<double>(), tr["fwdbwd_tokens_per_s"].get<double>(),
                  r["fwd_tokens_per_s"].get<double>() / tr["fwd_tokens_per_s"].get<double>());
    }
    std::printf("\n");
  }
  std::printf("ideal = 1/(1-z), the FFN work saved; GEMM eff = GFLOP/s of one up-projection GEMM with the\n"
              "run's mean rows per FFN expert over the same GEMM with the vanilla layer's rows (same provider).\n"
              "fwd and fwd+bwd columns (here and below): medians of %d rounds alternating between the variants.\n",
              out["forward_rounds"].get<int>());
  // The spread matters: the ideal assumes an expert's time is proportional to its rows,
  // while one with few rows still streams all its weights.
  std::printf("rows per FFN expert, fewest-most:");
  for (const auto& r : runs) {
    std::printf("  %s", r["variant"].get<std::string>().c_str());
    if (r.contains("target_z")) std::printf(" z %.2f", r["z"].get<double>());
    std::printf(" %lld-%lld", (long long)r["rows_min"].get<int64_t>(), (long long)r["rows_max"].get<int64_t>());
  }
  std::printf("\n");

  if (runs[0].contains("fwdbwd_bf16_tokens_per_s")) {
    std::printf("\nforward+backward with bf16 products (train --precision bf16: operands rounded to bf16, f32\n"
                "accumulation), same rounds. \"bf16 tok/s\" includes a separate pass rounding the experts to bf16\n"
                "in every call; the trainer writes that copy inside AdamW's pass instead, once per optimizer\n"
                "step, so \"products only\" leaves the pass out (its time is the \"rounding ms\" column):\n\n"
                "%-8s %6s | %12s %12s %9s | %12s %9s %12s\n", "variant", "z", "f32 tok/s", "bf16 tok/s", "bf16/f32",
                "products only", "bf16/f32", "rounding ms");
    for (const auto& r : runs)
      std::printf("%-8s %6.3f | %12.0f %12.0f %8.2fx | %12.0f %8.2fx %12.1f\n", r["variant"].get<std::string>().c_str(),
                  r["z"].get<double>(), r["fwdbwd_tokens_per_s"].get<double>(),
                  r["fwdbwd_bf16_tokens_per_s"].get<double>(), r["fwdbwd_bf16_over_f32"].get<double>(),
                  r["fwdbwd_bf16_products_tokens_per_s"].get<double>(),
                  r["fwdbwd_bf16_products_over_f32"].get<double>(), r["bf16_rounding_ms"].get<double>());
  }

  // The inference forward: FFN experts packed once as f32 panels (pack time above).
  std::printf("\nForward with the FFN experts prepacked as f32 column panels (inference; packing all %d experts took "
              "%.2f s, once)\n\n%-8s %6s %6s | %12s %9s %6s %9s %9s",
              s.N, pack_s, "variant", "z", "rows/e", "fwd tok/s", "fwd x", "ideal", "fwd/ideal", "panel eff");
  if (torch) std::printf(" | %12s %8s", "torch fwd", "vs torch");
  std::printf("\n");
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    const double sp = value_or(r, "fwd_packed_speedup", 1.0);
    const double ideal = value_or(r, "ideal_speedup", 1.0);
    const double eff = value_or(r, "panel_efficiency_vs_vanilla_rows", 1.0);
    std::printf("%-8s %6.3f %6.0f | %12.0f %9.2f %6.2f %9.2f %9.2f", r["variant"].get<std::string>().c_str(),
                r["z"].get<double>(), r["rows_per_ffn_expert"].get<double>(), r["fwd_packed_tokens_per_s"].get<double>(),
                sp, ideal, sp / ideal, eff);
    if (torch && i < out["torch"]["runs"].size()) {
      const auto& tr = out["torch"]["runs"][i];
      std::printf(" | %12.0f %7.2fx", tr["fwd_tokens_per_s"].get<double>(),
                  r["fwd_packed_tokens_per_s"].get<double>() / tr["fwd_tokens_per_s"].get<double>());
    }
    std::printf("\n");
  }
  std::printf("panel eff = the same up-projection GEMM through the panel kernel, run's rows over vanilla rows\n");

  std::printf("\nWhere the prepacked forward's time goes (ms), and the backward's weight-gradient GEMMs\n\n"
              "%-8s %6s | %8s %8s %9s %8s %8s | %8s %8s | %11s %9s\n",
              "variant", "z", "total", "router", "dispatch", "FFN", "combine", "FFN x", "ideal", "dW GEMMs ms", "dW GF/s");
  for (const auto& r : runs) {
    const auto& b = r["breakdown_ms"];
    const auto& b0 = runs[0]["breakdown_ms"];
    const double ideal = value_or(r, "ideal_speedup", 1.0);
    const double dw_flops = 2.0 * r["ffn_experts_per_token"].get<double>() * double(s.T) * 3.0 * double(s.D) * double(s.I);
    std::printf("%-8s %6.3f | %8.1f %8.2f %9.2f %8.1f %8.2f | %8.2f %8.2f | %11.1f %9.0f\n",
                r["variant"].get<std::string>().c_str(), r["z"].get<double>(), b["total"].get<double>(),
                b["router"].get<double>(), b["dispatch_gather"].get<double>(), b["ffn"].get<double>(),
                b["combine_rest"].get<double>(), b0["ffn"].get<double>() / b["ffn"].get<double>(), ideal,
                b["dweight_gemms"].get<double>(), dw_flops / (1e-3 * b["dweight_gemms"].get<double>()) / 1e9);
  }
  std::printf("dispatch = plan + statistics + balance loss + gather; combine = total - the rest; FFN x = vanilla's FFN\n"
              "time over this run's. dW GEMMs: dUp = dU^T X and dDown = dO^T H for every FFN expert, as the backward\n"
              "runs them (gradients overwritten); each writes its f32 gradient (%.2f GB for all experts) whatever\n"
              "the rows, so at few rows per expert they run at the memory's pace, not the cores'.\n",
              double(s.N) * 3.0 * double(s.D) * double(s.I) * 4 / 1e9);

  // How far 2x the PyTorch layer is from what this machine can do at all.
  peak = std::max(peak, fma_peak_gflops(s.threads));
  out["fma_peak_gflops"] = peak;
  const double van_flops_per_token = 2.0 * 6.0 * double(s.D) * double(s.I);  // top-2 FFN slots
  const double van_packed = runs[0]["fwd_packed_tokens_per_s"].get<double>();
  std::printf("\nf32 FMA peak of %d threads (same run, no memory traffic): %.0f GFLOP/s. Vanilla forward FFN rate: "
              "%.0f GFLOP/s (%.0f%% of peak) as trained, %.0f (%.0f%%) on panels.\n",
              s.threads, peak, van_flops_per_token * runs[0]["fwd_tokens_per_s"].get<double>() / 1e9,
              peak > 0 ? 100.0 * van_flops_per_token * runs[0]["fwd_tokens_per_s"].get<double>() / 1e9 / peak : 0.0,
              van_flops_per_token * van_packed / 1e9, peak > 0 ? 100.0 * van_flops_per_token * van_packed / 1e9 / peak : 0.0);
  if (torch) {
    const double need = 2.0 * out["torch"]["runs"][0]["fwd_tokens_per_s"].get<double>() * van_flops_per_token / 1e9;
    std::printf("2x PyTorch's vanilla forward needs the FFN GEMMs alone at >= %.0f GFLOP/s: %.0f%% of that peak.\n", need,
                peak > 0 ? 100.0 * need / peak : 0.0);
  }
  if (torch) std::printf("(torch rows are at their own calibrated z: see the JSON for the exact values)\n");
  const std::string json_path = flags.get("json", "");
  if (!json_path.empty()) {
    std::ofstream(json_path) << out.dump(2) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
