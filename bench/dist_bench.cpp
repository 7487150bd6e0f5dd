// bench/dist: one MoE++ layer at the released MoE++7B layer shape trained across ranks,
// against its vanilla twin (the same 16 FFN experts, no zero-computation experts), f32, under
// mpirun (bench/dist_bench.sh runs -np 2 and -np 4). A step is what the trainer does for the
// layer: the forward (FFN rows all-to-all to their experts' owners and back), the backward
// (the same twice more), and the gradient sums (replicated parameters over all ranks, each
// owned expert over its data-parallel replicas). Every rank routes its own tokens.
// Reported by rank 0, medians of steps alternating between the twins:
//   - bytes each rank sends in the all-to-all per token, and MoE++ / vanilla beside the
//     ratio of their FFN slot shares (the MoE++ claim: only FFN slots travel);
//   - messages per step and rank (all-to-all peers, counts exchanges, allreduces);
//   - the step split into compute, all-to-all and allreduce (the collective's time, waiting
//     for the slowest rank included: with more ranks than cores that waiting is compute);
//   - from the measured bytes, an estimate of the step on N machines, one rank each, at the
//     given network bandwidths: compute as measured per rank here, all-to-all bytes scaled by
//     the remote share (N-1)/N, a ring allreduce 2(N-1)/N of the gradient bytes.
// Usage: mpirun -np N dist_bench [--ep-size E (N)] [--tokens 512 (per rank)] [--hidden 1536]
//        [--intermediate 4096] [--experts 16] [--zc 0.3] [--steps 4] [--threads 1]
//        [--bandwidth 25,100 (Gbit/s)] [--json FILE]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/stats.h"
#include "dist/mpi_collectives.h"
#include "moe/expert_parallel.h"
#include "moe/moe_layer.h"
#include "moe_twins.h"

using namespace moepp;
using namespace moepp::bench;
using json = nlohmann::json;

namespace {

struct Step {
  double total = 0, exchange = 0, allreduce = 0;
  int64_t exchange_bytes = 0, exchange_calls = 0, count_calls = 0, allreduce_calls = 0, allreduce_bytes = 0;
  int64_t ffn_slots = 0, slots = 0;
};

struct Twin {
  std::string name;
  MoeConfig cfg;
  MoeParams<float> w, g;
  MoeCache<float> cache;
  MoeBackwardScratch<float> backward_scratch;
  std::vector<Step> steps;
};

// The twins share one set of FFN experts and their gradients (a 7B layer's experts are 1.2
// GB in f32): the vanilla twin holds them, the MoE++ twin borrows them for its steps.
void swap_experts(Twin& a, Twin& b) {
  std::swap(a.w.up, b.w.up);
  std::swap(a.w.down, b.w.down);
  std::swap(a.g.up, b.g.up);
  std::swap(a.g.down, b.g.down);
}

bool is_ffn_expert(const std::string& name) {
  return name.find("up_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
}

// The gradient sums of the trainer (train/replicas): the replicated tensors in one
// allreduce over all ranks, each owned expert over its replicas (none when E = N).
void sum_layer_gradients(Twin& t, Collectives& comm, std::vector<float>& staging) {
  staging.clear();
  std::vector<Tensor<float>*> replicated;
  t.g.for_each(t.cfg, [&](const std::string& name, Tensor<float>& x) {
    if (!is_ffn_expert(name) || comm.ep_size() == 1) replicated.push_back(&x);
  });
  for (auto* x : replicated) staging.insert(staging.end(), x->data(), x->data() + x->numel());
  comm.sum_all(staging.data(), int64_t(staging.size()));
  size_t at = 0;
  for (auto* x : replicated) {
    std::copy(staging.begin() + std::ptrdiff_t(at), staging.begin() + std::ptrdiff_t(at + size_t(x->numel())), x->data());
    at += size_t(x->numel());
  }
  if (comm.ep_size() == 1 || comm.dp_size() == 1) return;
  const ExpertShard mine = ExpertShard::of(t.cfg, comm.ep_size(), comm.ep_rank());
  for (int e = mine.first; e < mine.first + mine.count; ++e) {
    comm.sum_replicas(t.g.up[size_t(e)].data(), t.g.up[size_t(e)].numel());
    comm.sum_replicas(t.g.down[size_t(e)].data(), t.g.down[size_t(e)].numel());
  }
}

Step run_step(Twin& t, Collectives& comm, const Tensor<float>& x, const Tensor<float>& ones, const Tensor<float>& dy,
              Tensor<float>& y, Tensor<float>& dx, Tensor<float>& dz, std::vector<float>& staging) {
  const int64_t T = x.dim(0);
  const float* zp = t.cfg.num_zero_compute() ? ones.data() : nullptr;
  const Collectives::Traffic before = comm.traffic;
  comm.barrier();  // every rank starts the step together: the split then measures this step only
  Step s;
  s.total = seconds_of([&] {
    moe_forward(t.cfg, t.w, x.data(), T, zp, t.cache, y.data());
    dx.zero();
    moe_backward(t.cfg, t.w, x.data(), zp, t.cache, dy.data(), static_cast<const float*>(nullptr), 0.01, dx.data(),
                 zp ? dz.data() : nullptr, t.g, t.backward_scratch, GradMode::overwrite);
    sum_layer_gradients(t, comm, staging);
  });
  const Collectives::Traffic& after = comm.traffic;
  s.exchange = after.exchange_seconds - before.exchange_seconds;
  s.allreduce = after.allreduce_seconds - before.allreduce_seconds;
  s.exchange_bytes = after.exchange_bytes - before.exchange_bytes;
  s.exchange_calls = after.exchange_calls - before.exchange_calls;
  s.count_calls = after.count_calls - before.count_calls;
  s.allreduce_calls = after.allreduce_calls - before.allreduce_calls;
  s.allreduce_bytes = after.allreduce_bytes - before.allreduce_bytes;
  s.ffn_slots = t.cache.stats.slots_by_kind[size_t(ExpertKind::ffn)];
  s.slots = t.cache.stats.slots();
  return s;
}

template <typename F>
double median_of(const std::vector<Step>& steps, F field) {
  std::vector<double> v;
  for (const auto& s : steps) v.push_back(double(field(s)));
  return median(v);
}

struct Summary {
  double ffn_share = 0, bytes_per_token = 0, messages = 0, total = 0, exchange = 0, allreduce = 0, compute = 0;
  double allreduce_bytes = 0;
};

// Bytes and slots over every rank; times as rank 0 saw them (every rank waits for the rest).
Summary summarize(const Twin& t, Collectives& comm, int64_t tokens_per_rank) {
  double sums[3] = {0, 0, 0};
  for (const auto& s : t.steps) {
    sums[0] += double(s.exchange_bytes);
    sums[1] += double(s.ffn_slots);
    sums[2] += double(s.slots);
  }
  comm.sum_all(sums, 3);
  Summary m;
  const double tokens = double(tokens_per_rank) * double(comm.size()) * double(t.steps.size());
  m.bytes_per_token = sums[0] / tokens;
  m.ffn_share = sums[1] / sums[2];
  const int peers = comm.ep_size() - 1;
  m.messages = median_of(t.steps, [&](const Step& s) {
    return double((s.exchange_calls + s.count_calls) * peers + s.allreduce_calls);
  });
  m.total = median_of(t.steps, [](const Step& s) { return s.total; });
  m.exchange = median_of(t.steps, [](const Step& s) { return s.exchange; });
  m.allreduce = median_of(t.steps, [](const Step& s) { return s.allreduce; });
  m.compute = median_of(t.steps, [](const Step& s) { return s.total - s.exchange - s.allreduce; });
  m.allreduce_bytes = median_of(t.steps, [](const Step& s) { return double(s.allreduce_bytes); });
  return m;
}

json summary_json(const Summary& m) {
  return {{"ffn_slot_share", m.ffn_share}, {"alltoall_bytes_per_token", m.bytes_per_token},
          {"messages_per_step", m.messages}, {"step_ms", 1e3 * m.total}, {"compute_ms", 1e3 * m.compute},
          {"alltoall_ms", 1e3 * m.exchange}, {"allreduce_ms", 1e3 * m.allreduce},
          {"allreduce_bytes_per_step", m.allreduce_bytes}};
}

// The step on `machines` machines of one rank each, all of them one expert-parallel group
// (pure expert parallelism: the replicated parameters are the only allreduce).
json estimate(const Summary& m, int measured_ep, int64_t tokens, int machines, double gbit) {
  const double bytes_per_s = gbit * 1e9 / 8;
  const double remote = double(machines - 1) / machines, measured_remote = double(measured_ep - 1) / measured_ep;
  const double alltoall_bytes = m.bytes_per_token * double(tokens) * remote / measured_remote;
  const double alltoall = alltoall_bytes / bytes_per_s;
  const double allreduce = 2.0 * remote * m.allreduce_bytes / bytes_per_s;
  const char* dominant = m.compute >= alltoall && m.compute >= allreduce ? "compute"
                         : alltoall >= allreduce                         ? "all-to-all"
                                                                         : "allreduce";
  return {{"machines", machines}, {"gbit_per_s", gbit}, {"compute_ms", 1e3 * m.compute},
          {"alltoall_ms", 1e3 * alltoall}, {"allreduce_ms", 1e3 * allreduce},
          {"step_ms", 1e3 * (m.compute + alltoall + allreduce)}, {"dominant", dominant}};
}

int env_world_size() {
  const char* s = std::getenv("OMPI_COMM_WORLD_SIZE");
  return s ? std::atoi(s) : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const Flags flags(argc, argv);
  if (flags.has("help")) {
    std::printf(
        "dist_bench: the MoE++ layer vs its vanilla twin across ranks (run it with mpirun -np N)\n"
        "  all-to-all bytes per token, messages per step, compute / all-to-all / allreduce,\n"
        "  and the step estimated on N machines\n"
        "  --ep-size E (all ranks) --tokens N per rank (512) --hidden D (1536) --intermediate I (4096)\n"
        "  --experts N (16) --zc SHARE of MoE++ slots on zero-computation experts (0.3)\n"
        "  --steps N per twin (4) --threads N per rank (1) --bandwidth LIST Gbit/s (25,100)\n"
        "  --json FILE  also write the results as JSON (rank 0)\n");
    return 0;
  }
  if (!launched_by_mpirun()) {
    std::fprintf(stderr, "dist_bench: start it with mpirun -np N (bench/dist_bench.sh runs 2 and 4)\n");
    return 2;
  }
  const int64_t T = flags.get_int("tokens", 512), D = flags.get_int("hidden", 1536),
                I = flags.get_int("intermediate", 4096);
  const int F = int(flags.get_int("experts", 16)), steps = int(flags.get_int("steps", 4));
  const double zc = flags.get_list("zc", {0.3})[0];
  const std::vector<double> bandwidths = flags.get_list("bandwidth", {25, 100});
  set_threads(int(flags.get_int("threads", 1)));
  const auto comm_owner = start_distributed(int(flags.get_int("ep-size", env_world_size())));
  Collectives& comm = *comm_owner;
  const bool lead = comm.rank() == 0;

  Twin van{"vanilla", released_moe_layer(D, I, F, false), {}, {}, {}, {}, {}};
  Twin pp{"moe++", released_moe_layer(D, I, F, true), {}, {}, {}, {}, {}};
  check_expert_parallel(van.cfg, comm.ep_size());
  van.cache.comm = pp.cache.comm = &comm;
  // The same weights on every rank (the same seed); each rank its own tokens.
  uint64_t state = 99;
  van.w = MoeParams<float>::zeros(van.cfg);
  van.g = MoeParams<float>::zeros(van.cfg);
  pp.w = MoeParams<float>::zeros(pp.cfg);
  pp.g = MoeParams<float>::zeros(pp.cfg);
  const float expert_width = 0.02f * 1.7320508f, router_width = 0.5f * 1.7320508f;
  for (auto& t : van.w.up) fill_uniform(t.data(), t.numel(), expert_width, state);
  for (auto& t : van.w.down) fill_uniform(t.data(), t.numel(), expert_width, state);
  fill_uniform(pp.w.wg.data(), pp.w.wg.numel(), router_width, state);
  std::copy(pp.w.wg.data(), pp.w.wg.data() + van.w.wg.numel(), van.w.wg.data());  // the FFN rows agree
  for (auto& t : pp.w.constant) fill_uniform(t.data(), t.numel(), expert_width, state);
  for (auto& t : pp.w.constant_wg) fill_uniform(t.data(), t.numel(), expert_width, state);
  const int E = pp.cfg.num_experts();
  Tensor<float> x({T, D}), dy({T, D}), ones({T, int64_t(E)}), y({T, D}), dx({T, D}), dz({T, int64_t(E)});
  std::fill(ones.data(), ones.data() + ones.numel(), 1.0f);
  {
    // The router bias that gives the wanted zero-computation share, found on one batch
    // every rank shares, so that every rank holds the same gate map.
    uint64_t shared = 7;
    fill_uniform(x.data(), x.numel(), 1.7320508f, shared);
    const double got = calibrate_zc(pp.cfg, pp.w, x, ones, T, zc);
    if (lead) std::fprintf(stderr, "dist_bench: MoE++ router biased to %.3f of slots on zero-computation experts\n", got);
  }
  uint64_t mine = 1000 + uint64_t(comm.rank());
  fill_uniform(x.data(), x.numel(), 1.7320508f, mine);
  fill_uniform(dy.data(), dy.numel(), 1.7320508f, mine);
  if (lead)
    std::fprintf(stderr, "dist_bench: %d ranks, expert-parallel groups of %d, %lld tokens per rank, D=%lld I=%lld, "
                 "%d FFN experts, top-2, f32, %d thread(s) per rank\n",
                 comm.size(), comm.ep_size(), (long long)T, (long long)D, (long long)I, F, max_threads());

  std::vector<float> staging;
  auto step_of = [&](Twin& t, bool record) {
    const bool borrow = &t == &pp;
    if (borrow) swap_experts(van, pp);
    Step s = run_step(t, comm, x, ones, dy, y, dx, dz, staging);
    if (borrow) swap_experts(van, pp);
    if (record) t.steps.push_back(s);
  };
  step_of(van, false);  // warm-up: caches grow, pages fault in
  step_of(pp, false);
  for (int r = 0; r < steps; ++r) {
    step_of(van, true);
    step_of(pp, true);
    if (lead) std::fprintf(stderr, "  round %d/%d\n", r + 1, steps);
  }
  const Summary sv = summarize(van, comm, T), sp = summarize(pp, comm, T);
  if (!lead) return 0;

  json out;
  out["setup"] = {{"ranks", comm.size()}, {"ep_size", comm.ep_size()}, {"tokens_per_rank", T}, {"hidden", D},
                  {"intermediate", I}, {"ffn_experts", F}, {"top_k", 2}, {"threads_per_rank", max_threads()},
                  {"steps", steps}, {"target_zc_share", zc}};
  out["vanilla"] = summary_json(sv);
  out["moepp"] = summary_json(sp);
  out["bytes_ratio"] = sp.bytes_per_token / sv.bytes_per_token;
  out["ffn_share_ratio"] = sp.ffn_share / sv.ffn_share;
  std::printf("dist_bench: %d ranks, EP %d x DP %d, %lld tokens per rank per step, D=%lld I=%lld, %d FFN experts, f32\n",
              comm.size(), comm.ep_size(), comm.dp_size(), (long long)T, (long long)D, (long long)I, F);
  std::printf("%-8s %9s %13s %9s %9s %9s %10s %10s\n", "twin", "FFN share", "A2A B/token", "msgs/step", "step ms",
              "compute", "all-to-all", "allreduce");
  for (const auto* pair : {&sv, &sp}) {
    const Summary& m = *pair;
    std::printf("%-8s %9.3f %13.0f %9.0f %9.1f %8.0f%% %9.0f%% %9.0f%%\n", pair == &sv ? "vanilla" : "moe++",
                m.ffn_share, m.bytes_per_token, m.messages, 1e3 * m.total, 100 * m.compute / m.total,
                100 * m.exchange / m.total, 100 * m.allreduce / m.total);
  }
  std::printf("MoE++ / vanilla: all-to-all bytes %.3f, FFN slot share %.3f, step time %.3f\n",
              sp.bytes_per_token / sv.bytes_per_token, sp.ffn_share / sv.ffn_share, sp.total / sv.total);
  if (comm.ep_size() > 1 && comm.dp_size() == 1) {  // measured as one group: its allreduce is the replicated part
    json est = json::array();
    std::printf("estimated MoE++ step on N machines (one rank each, one expert-parallel group; compute as measured here):\n");
    std::printf("%8s %8s %10s %12s %10s %10s  %s\n", "machines", "Gbit/s", "compute ms", "all-to-all ms", "allreduce",
                "step ms", "dominant");
    for (double bw : bandwidths)
      for (int n : {2, 4, 8, 16}) {
        if (n > F) continue;
        const json e = estimate(sp, comm.ep_size(), T, n, bw);
        est.push_back(e);
        std::printf("%8d %8.0f %10.1f %12.1f %10.2f %10.1f  %s\n", n, bw, e["compute_ms"].get<double>(),
                    e["alltoall_ms"].get<double>(), e["allreduce_ms"].get<double>(), e["step_ms"].get<double>(),
                    e["dominant"].get<std::string>().c_str());
      }
    out["estimate_moepp"] = est;
  }
  const std::string path = flags.get("json", "");
  if (!path.empty()) std::ofstream(path) << out.dump(2) << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dist_bench: %s\n", e.what());
  return 1;
}
