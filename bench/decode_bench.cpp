// bench/decode: prefill and decode tokens/s with a KV-cache session, per weight type (f32,
// bf16, q8_0, q4), and decode as a fraction of the memory-bandwidth bound (the weight and
// KV-cache bytes a decode token reads over the read bandwidth, measured before each chunk of
// 16 decoded tokens: the VM's bandwidth drifts within a decode).
// Random weights, built in memory.
//   --shape mixtral (default): a Mixtral-shaped vanilla MoE (vocab 8192, hidden 1024, 8
//     layers, 16/8 heads, FFN 2816, 8 experts, top-2) and its MoE++ twin (+ 2 constant,
//     copy, zero experts); f32 runs the plain session, bf16/q8_0/q4 the packed one.
//   --shape moepp7b: the released MoE++7B's shapes (vocab 65536, hidden 1536, FFN 4096, 24
//     layers, 16 + 4 experts), packed tensor by tensor as they are generated (never held
//     in f32); reports the build time and resident memory. Run one dtype per process so
//     the resident memory is that model's alone.
//   --model DIR: a model folder on disk (e.g. tools/bench/make_moepp7b_folder.py's), loaded
//     tensor by tensor as --dtype; "build s" is then the load time.
//   --write-folders DIR [--tokenizer FILE]: write the mixtral-shaped pair as model folders
//     (DIR/vanilla, DIR/moepp) for bench/serve_bench.sh, and exit.
//   --batch 1,4,16: batched decode instead - that many sequences (each prefilled with
//     --prompt tokens, default 64) decoded together, one decoder step per token for all of
//     them; aggregate tokens/s against one sequence's, per model. Expert weights are read
//     once per step for every row that chose them, so the aggregate should grow with N.
//   --kv-dtype f32,bf16: a row per KV-cache type (default f32) on the same weights.
// Usage: decode_bench [--shape mixtral|moepp7b] [--dtype f32,bf16,q8_0] [--kv-dtype f32] [--prompt 512]
//                     [--decode 128] [--layers N] [--batch 1,4,16] [--threads 2] [--pin 1]
#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/huge_page_arena.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "infer/session.h"
#include "model/decoder.h"
#include "model/hf_folder.h"
#include "model/model_folder.h"
#include "model/packed_model.h"
#include "model/params.h"

using namespace moepp;
using namespace moepp::bench;

namespace {

// A decoder's sizes; the MoE fields are left to the caller.
ModelConfig decoder_shape(int64_t vocab, int64_t hidden, int64_t intermediate, int layers, int heads, int kv_heads,
                          int64_t max_positions) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.max_position_embeddings = max_positions;
  c.moe.two_layer_router = false;
  c.moe.scale_inputs = false;
  return c;
}

ModelConfig mixtral_shape(int layers, bool moepp) {
  ModelConfig c = decoder_shape(8192, 1024, 2816, layers, 16, 8, 1024);
  c.moe.logits_norm = moepp;
  c.moe.num_constant = moepp ? 2 : 0;
  c.moe.num_copy = moepp ? 1 : 0;
  c.moe.num_zero = moepp ? 1 : 0;
  c.gating_residual = moepp;
  c.moe.num_ffn = 8;
  return c;
}

// The released MoE++7B (SPEC: 16 FFN + 2 constant + copy + zero, logit norm, linear router,
// inputs not scaled by k).
ModelConfig moepp7b_shape(int layers) {
  ModelConfig c = decoder_shape(65536, 1536, 4096, layers, 16, 16, 2048);
  c.moe.logits_norm = true;
  c.moe.num_ffn = 16;  // + the released 2 constant, 1 copy, 1 zero experts: E = 20
  return c;
}

// GB/s of a plain parallel read of a buffer much larger than the caches. The VM's read
// bandwidth moves by up to 1.7x within a minute, so the bench reads it before each chunk of
// a decode and holds each chunk against the bandwidth read just before it.
class BandwidthProbe {
 public:
  // On 2 MB pages, as the packed weights are: a plain read of 4 KB pages ran ~0.85x as fast
  // (docs/results/decode.md, "Packed weights on 2 MB pages").
  explicit BandwidthProbe(size_t bytes) : buf_(bytes / sizeof(float), 0.0f) {
    for (size_t i = 0; i < buf_.size(); i += 1024) buf_[i] = float(i);
  }
  double read_gbps() {
    const double t = median_seconds(3, [&] {
      double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
      for (int64_t i = 0; i < int64_t(buf_.size()); i += 16) s += buf_[size_t(i)] + buf_[size_t(i) + 8];
      sink_ += s;
    });
    return double(buf_.size()) * sizeof(float) / t / 1e9;
  }
  ~BandwidthProbe() {
    if (sink_ == 42) std::printf(" ");  // keeps the reads
  }

 private:
  HugePageVector<float> buf_;
  double sink_ = 0;
};

// Random weights like a trained model's in scale: uniform matrices of std 0.02, unit
// norms, zero gate maps, and router weights of std 0.5 so that routing is decisive. A
// 64-bit LCG, not Rng::normal: the MoE++7B shape needs 7.7 billion values.
void fill_random(const std::string& name, Tensor<float>& t, uint64_t& state) {
  const bool norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight";
  const bool router = name.find("gate.wg") != std::string::npos;
  const bool gate_map = name.find("gate_map") != std::string::npos;
  const float half_width = float((router ? 0.5 : 0.02) * 1.7320508);  // uniform(-a, a) has std a / sqrt(3)
  if (!t.allocated()) t.resize(t.shape());  // PackedModel::build hands over declared shapes
  fill_uniform(t.data(), t.numel(), half_width, state);  // advances the state for every tensor alike
  if (norm || gate_map) std::fill(t.data(), t.data() + t.numel(), norm ? 1.0f : 0.0f);
}

struct Weights {
  ModelParams<float> plain;             // f32 runs
  std::unique_ptr<PackedModel> packed;  // bf16 / q8_0 runs
  double build_s = 0;
};

Weights make_weights(const ModelConfig& cfg, const std::string& dtype, bool stream, const std::string& folder) {
  Weights w;
  uint64_t rng = 5;
  const auto t0 = std::chrono::steady_clock::now();
  if (!folder.empty()) {
    w.packed = load_packed_model_folder(folder, parse_weight_type(dtype));
  } else if (stream) {
    w.packed = PackedModel::build(cfg, parse_weight_type(dtype),
                                  [&](const std::string& name, Tensor<float>& t) { fill_random(name, t, rng); });
  } else {
    w.plain = ModelParams<float>::zeros(cfg);
    w.plain.for_each(cfg, [&](const std::string& name, Tensor<float>& t) { fill_random(name, t, rng); });
    if (dtype != "f32") w.packed = PackedModel::pack(cfg, std::move(w.plain), parse_weight_type(dtype));
  }
  w.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return w;
}

// Weight bytes one decode token reads: everything except the FFN experts it skips, and one
// embedding row instead of the table (the LM head is read whole).
double bytes_per_token(const ModelConfig& cfg, const Weights& w, double ffn_per_tok) {
  const double V = double(cfg.vocab_size), D = double(cfg.hidden_size), I = double(cfg.intermediate_size);
  const double moe_layers = double(cfg.num_moe_layers()), nffn = double(cfg.num_ffn_experts());
  if (!w.packed) {
    const double per_expert = 3.0 * D * I * 4;
    return (double(total_params(cfg)) - V * D) * 4 + D * 4 - (nffn - ffn_per_tok) * per_expert * moe_layers;
  }
  const PackedModel& m = *w.packed;
  double rest = 0;  // what stays f32
  m.rest.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { rest += double(t.numel()) * 4; });
  double per_expert = 0;
  for (const auto& L : m.layers)
    if (L.is_moe) {
      per_expert = double(L.expert_up[0].bytes() + L.expert_down[0].bytes());
      break;
    }
  const double embed = double(m.embed.bytes());
  return double(m.packed_bytes()) - embed + embed / V + (m.tied ? embed : 0.0) + rest -
         (nffn - ffn_per_tok) * per_expert * moe_layers;
}

// Bytes of keys and values a decode token reads: every layer's cache (f32 or bf16) up to its
// position, averaged over the decoded tokens (the context grows from prompt + 1 to
// prompt + decode).
double kv_bytes_per_token(const ModelConfig& cfg, int64_t prompt, int64_t decode, KvDtype kv) {
  const double context = double(prompt) + double(decode + 1) / 2.0;
  return context * double(KvCache<float>::bytes_per_position(cfg, kv));
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

// Aggregate decode tokens/s of `n` sequences decoded together (median step time).
double batched_decode_tps(const ModelConfig& cfg, const Weights& w, int64_t n, int64_t prompt, int64_t decode,
                          KvDtype kv_dtype) {
  const DecoderWeights<float> dw = w.packed ? DecoderWeights<float>::of(*w.packed) : DecoderWeights<float>::of(w.plain);
  Rng rng(7);
  std::vector<std::unique_ptr<KvCache<float>>> caches;
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  for (int64_t s = 0; s < n; ++s) {
    caches.push_back(std::make_unique<KvCache<float>>(cfg, prompt + decode, kv_dtype));
    std::vector<int32_t> ids(static_cast<size_t>(prompt));
    for (auto& t : ids) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    const SequenceStep<float> step{caches.back().get(), ids.data(), prompt};
    decoder_step<float>(cfg, dw, {&step, 1}, scratch, logits, LogitRows::last);
  }
  std::vector<int32_t> next(static_cast<size_t>(n));
  std::vector<SequenceStep<float>> steps(static_cast<size_t>(n));
  std::vector<double> step_s;
  for (int64_t i = 0; i < decode; ++i) {
    for (int64_t s = 0; s < n; ++s) {
      next[size_t(s)] = int32_t(rng.below(uint64_t(cfg.vocab_size)));
      steps[size_t(s)] = {caches[size_t(s)].get(), &next[size_t(s)], 1};
    }
    step_s.push_back(seconds_of([&] { decoder_step<float>(cfg, dw, steps, scratch, logits, LogitRows::last); }));
  }
  return double(n) / median(step_s);
}

void run_batched(const Flags& f, const std::vector<std::string>& dtypes, const std::vector<std::string>& kv_dtypes,
                 int layers) {
  const int64_t prompt = f.get_int("prompt", 64), decode = f.get_int("decode", 32);
  std::vector<int64_t> batches;
  for (double b : f.get_list("batch", {1, 4, 16})) batches.push_back(int64_t(b));
  std::printf("batched decode: mixtral shape, %d layers, %d threads; prompt %lld per sequence, %lld decode steps\n",
              layers, max_threads(), (long long)prompt, (long long)decode);
  std::printf("%-6s %-4s %-8s %9s | %10s %14s | %9s\n", "dtype", "kv", "model", "sequences", "step ms",
              "aggregate t/s", "vs 1 seq");
  for (const auto& dtype : dtypes)
    for (bool moepp : {false, true}) {
      const ModelConfig cfg = mixtral_shape(layers, moepp);
      const Weights w = make_weights(cfg, dtype, false, "");
      for (const auto& kv_name : kv_dtypes) {
        double one = 0;
        for (int64_t n : batches) {
          const double tps = batched_decode_tps(cfg, w, n, prompt, decode, parse_kv_dtype(kv_name));
          if (n == batches.front()) one = tps / double(n);
          std::printf("%-6s %-4s %-8s %9lld | %10.1f %14.1f | %8.2fx\n", dtype.c_str(), kv_name.c_str(),
                      moepp ? "MoE++" : "vanilla", (long long)n, 1e3 * double(n) / tps, tps, tps / one);
        }
      }
    }
}

}  // namespace

// --write-folders DIR: the Mixtral-shaped vanilla model and its MoE++ twin as model folders
// DIR/vanilla and DIR/moepp (f32, the same random weights the benchmark builds), with
// --tokenizer FILE as their tokenizer.model: what bench/serve_bench.sh serves.
void write_folders(const Flags& f, int layers) {
  const std::string dir = f.get("write-folders", "");
  for (bool moepp : {false, true}) {
    const ModelConfig cfg = mixtral_shape(layers, moepp);
    cfg.validate();
    const Weights w = make_weights(cfg, "f32", false, "");
    const std::string out = dir + (moepp ? "/moepp" : "/vanilla");
    save_model_folder(out, cfg, w.plain, f.get("tokenizer", ""));
    std::printf("wrote %s (%s)\n", out.c_str(), moepp ? "MoE++" : "vanilla");
  }
}

int main(int argc, char** argv) try {
  const Flags f(argc, argv);
  if (f.has("write-folders")) {
    write_folders(f, int(f.get_int("layers", 8)));
    return 0;
  }
  const std::string folder = f.get("model", "");
  const std::string shape = folder.empty() ? f.get("shape", "mixtral") : "folder " + folder;
  const bool big = shape == "moepp7b" || !folder.empty();
  if (!big && folder.empty() && shape != "mixtral") throw std::runtime_error("--shape must be mixtral or moepp7b");
  const int64_t prompt = f.get_int("prompt", big ? 64 : 512), decode = f.get_int("decode", big ? 16 : 128);
  const int layers = folder.empty() ? int(f.get_int("layers", big ? 24 : 8)) : read_hf_config(folder).num_hidden_layers;
  const auto dtypes = split(f.get("dtype", big ? "bf16" : "f32,bf16,q8_0"));
  const auto kv_dtypes = split(f.get("kv-dtype", "f32"));  // f32 and/or bf16 KV caches, each a row
  setup_threads(f, int(f.get_int("threads", 2)));
  if (f.has("batch")) {
    if (big) throw std::runtime_error("--batch runs the mixtral shape");
    run_batched(f, dtypes, kv_dtypes, layers);
    return 0;
  }
  std::printf("decode bench: %s shape, %d layers, %d threads; prompt %lld, decode %lld\n", shape.c_str(), layers,
              max_threads(), (long long)prompt, (long long)decode);
  // "of bound": decode tokens/s over bandwidth / (weight MB + KV MB a token reads), per
  // chunk of the decode against the bandwidth read just before it; the median over chunks
  // and, in brackets, their range. "read GB/s": the median of those reads.
  std::printf("%-6s %-4s %-8s %6s %8s | %9s %8s | %11s %10s | %9s %6s %9s %9s %s\n", "dtype", "kv", "model", "z",
              "FFN/tok", "build s", "RSS GB", "prefill t/s", "decode t/s", "MB/token", "KV MB", "read GB/s", "of bound",
              "(chunks)");
  for (const auto& dtype : dtypes) {
    if (big && dtype == "f32") throw std::runtime_error("moepp7b in f32 needs ~31 GB; use bf16 or q8_0");
    double van_decode = 0;
    for (bool moepp : big ? std::vector<bool>{true} : std::vector<bool>{false, true}) {
      const ModelConfig cfg =
          !folder.empty() ? read_hf_config(folder) : big ? moepp7b_shape(layers) : mixtral_shape(layers, moepp);
      cfg.validate();
      const Weights w = make_weights(cfg, dtype, big, folder);
      const double rss = resident_gb();
      for (const auto& kv_name : kv_dtypes) {
        const KvDtype kvd = parse_kv_dtype(kv_name);
        auto s = w.packed ? Session<float>(*w.packed, prompt + decode, kvd)
                          : Session<float>(cfg, w.plain, prompt + decode, kvd);
        Rng rng(7);
        std::vector<int32_t> ids(static_cast<size_t>(prompt));
        for (auto& t : ids) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
        Tensor<float> logits;
        auto t0 = std::chrono::steady_clock::now();
        s.append(ids.data(), prompt, logits);
        const double prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        // The decode in chunks of kChunk tokens, each after a read of the bandwidth (256 MB,
        // allocated after the resident set above was taken).
        constexpr int64_t kChunk = 16;
        BandwidthProbe probe(size_t(256) << 20);
        std::vector<double> chunk_tps, chunk_bw;
        double ffn_slots = 0, decode_s = 0;
        for (int64_t done = 0; done < decode;) {
          const int64_t n = std::min(kChunk, decode - done);
          chunk_bw.push_back(probe.read_gbps());
          t0 = std::chrono::steady_clock::now();
          for (int64_t i = 0; i < n; ++i) {
            const int32_t next = int32_t(rng.below(uint64_t(cfg.vocab_size)));
            s.append(&next, 1, logits);
            for (const auto& r : s.last_routing()) ffn_slots += double(r.slots_by_kind[size_t(ExpertKind::ffn)]);
          }
          const double chunk_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          chunk_tps.push_back(double(n) / chunk_s);
          decode_s += chunk_s;
          done += n;
        }
        const double ffn_per_tok = ffn_slots / double(decode) / double(cfg.num_moe_layers());
        const double bytes = bytes_per_token(cfg, w, ffn_per_tok), kv = kv_bytes_per_token(cfg, prompt, decode, kvd);
        const double tps = double(decode) / decode_s;
        // Of the bound: the median over chunks of each chunk's rate over its own bound.
        std::vector<double> of_bound;
        for (size_t c = 0; c < chunk_tps.size(); ++c) of_bound.push_back(chunk_tps[c] / (chunk_bw[c] * 1e9 / (bytes + kv)));
        const double bw = median(chunk_bw);
        if (!moepp && kv_name == kv_dtypes[0]) van_decode = tps;
        std::printf("%-6s %-4s %-8s %6.3f %8.3f | %9.1f %8.2f | %11.0f %10.1f | %9.1f %6.1f %9.1f %8.0f%% (%.0f-%.0f)\n",
                    dtype.c_str(), kv_name.c_str(), moepp ? "MoE++" : "vanilla", moepp ? 1.0 - ffn_per_tok / 2.0 : 0.0,
                    ffn_per_tok, w.build_s, rss, double(prompt) / prefill_s, tps, bytes / 1e6, kv / 1e6, bw,
                    100.0 * median(of_bound), 100.0 * *std::min_element(of_bound.begin(), of_bound.end()),
                    100.0 * *std::max_element(of_bound.begin(), of_bound.end()));
        if (moepp && van_decode > 0 && kv_name == kv_dtypes[0])
          std::printf("%-6s MoE++/vanilla decode: %.2fx (FFN slots skipped: %.0f%%)\n", dtype.c_str(), tps / van_decode,
                      100.0 * (1.0 - ffn_per_tok / 2.0));
      }
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
