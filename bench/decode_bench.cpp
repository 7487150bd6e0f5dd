// bench/decode: prefill and decode tokens/s of a Mixtral-shaped vanilla MoE and its MoE++
// twin (same FFN experts plus 4 zero-computation experts), f32, with a KV-cache session;
// decode as a fraction of the memory-bandwidth bound (weight bytes a decode token reads
// over a read bandwidth measured in the same run). Random weights, built in memory.
// Usage: decode_bench [--prompt 512] [--decode 128] [--layers 8] [--threads 2] [--z 0.5]
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "infer/session.h"
#include "model/params.h"

using namespace moepp;
using namespace moepp::bench;

namespace {

ModelConfig mixtral_shape(int layers, bool moepp) {
  ModelConfig c;
  c.vocab_size = 8192;
  c.hidden_size = 1024;
  c.intermediate_size = 2816;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 8;
  c.max_position_embeddings = 1024;
  c.moe_2layer_gate = false;
  c.moe_use_logits_norm = moepp;
  c.moe_feature_no_mul_topk = true;
  c.num_constant_experts = moepp ? 2 : 0;
  c.num_copy_experts = moepp ? 1 : 0;
  c.num_zero_experts = moepp ? 1 : 0;
  c.gating_residual = moepp;
  c.num_experts = 8 + c.num_constant_experts + c.num_copy_experts + c.num_zero_experts;
  return c;
}

// GB/s of a plain parallel read of a buffer much larger than the caches.
double read_bandwidth() {
  std::vector<float> buf(size_t(1) << 28);  // 1 GiB
  for (size_t i = 0; i < buf.size(); i += 1024) buf[i] = float(i);
  double sink = 0;
  const double t = median_seconds(3, [&] {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (int64_t i = 0; i < int64_t(buf.size()); i += 16) s += buf[size_t(i)] + buf[size_t(i) + 8];
    sink += s;
  });
  if (sink == 42) std::printf(" ");
  return double(buf.size()) * 4 / t / 1e9;
}

}  // namespace

int main(int argc, char** argv) try {
  const Flags f(argc, argv);
  const int64_t prompt = f.get_int("prompt", 512), decode = f.get_int("decode", 128);
  const int layers = int(f.get_int("layers", 8));
  set_threads(int(f.get_int("threads", 2)));
  const double bw = read_bandwidth();
  std::printf("decode bench: Mixtral shape (vocab 8192, hidden 1024, %d layers, 16/8 heads, FFN 2816, 8 FFN experts,"
              " top-2), f32, %d threads; read bandwidth %.1f GB/s\n", layers, max_threads(), bw);
  std::printf("%-8s %7s %8s | %12s %12s | %12s %10s\n", "model", "z", "FFN/tok", "prefill t/s", "decode t/s",
              "MB/token", "of bound");
  double van_decode = 0;
  for (bool moepp : {false, true}) {
    ModelConfig cfg = mixtral_shape(layers, moepp);
    cfg.validate();
    auto w = ModelParams<float>::zeros(cfg);
    Rng rng(5);
    cfg.initializer_range = 0.02;
    w.init(cfg, rng);
    // Router weights larger than the init so that routing is decisive, like a trained model's.
    for (auto& L : w.layers)
      for (int64_t i = 0; i < L.moe.wg.numel(); ++i) L.moe.wg[i] = float(rng.normal() * 0.5);
    Session<float> s(cfg, w, prompt + decode);
    std::vector<int32_t> ids(static_cast<size_t>(prompt));
    for (auto& t : ids) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    Tensor<float> logits;
    auto t0 = std::chrono::steady_clock::now();
    s.append(ids.data(), prompt, logits);
    const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double ffn_slots = 0;
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < decode; ++i) {
      const int32_t next = int32_t(rng.below(uint64_t(cfg.vocab_size)));
      s.append(&next, 1, logits);
      for (const auto& r : s.last_routing()) ffn_slots += double(r.slots_by_kind[size_t(ExpertKind::ffn)]);
    }
    const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ffn_per_tok = ffn_slots / double(decode) / double(cfg.num_moe_layers());
    // Weight bytes one decode token reads: everything but the FFN experts it does not use,
    // and one embedding row instead of the table.
    const double D = double(cfg.hidden_size), I = double(cfg.intermediate_size), V = double(cfg.vocab_size);
    const double per_expert = 3.0 * D * I * 4;
    const double bytes = (double(total_params(cfg)) - V * D) * 4 + D * 4 -
                         (8.0 - ffn_per_tok) * per_expert * double(cfg.num_moe_layers());
    const double tps = double(decode) / decode_s;
    const double bound = bw * 1e9 / bytes;
    if (!moepp) van_decode = tps;
    std::printf("%-8s %7.3f %8.3f | %12.0f %12.1f | %12.1f %9.0f%%\n", moepp ? "MoE++" : "vanilla",
                moepp ? 1.0 - ffn_per_tok / 2.0 : 0.0, ffn_per_tok, double(prompt) / prefill_s, tps, bytes / 1e6,
                100.0 * tps / bound);
    if (moepp)
      std::printf("MoE++/vanilla decode: %.2fx (FFN slots skipped: %.0f%%)\n", tps / van_decode,
                  100.0 * (1.0 - ffn_per_tok / 2.0));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
