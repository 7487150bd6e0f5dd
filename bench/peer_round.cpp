// bench/peer_round: moepp's side of one round of bench/peer_llamacpp/run.sh, doing what
// llama_round.mjs does with llama.cpp: load a model folder as --dtype (timed, as
// `moepp generate` loads it), prefill the prompt on an empty cache twice (the process's
// first prefill, then again warm), then decode --decode tokens one at a time, each the
// greedy choice after the last. Prints one JSON object on stdout.
// Usage: peer_round --model DIR --ids FILE [--dtype f32|bf16|q8_0|q4] [--decode 128]
//                   [--threads 2] [--pin 1] [--mmap 0|1] [--prefills 2]
//   --mmap 1: f32 weights used where they lie in the file (moepp generate --mmap).
//   --prefills N: N prefills in all (at least 2); prefill_tps is the median of the warm
//   ones, to compare two builds' prompts in one process each.
//   FILE holds the prompt's token ids, comma-separated.
//        peer_round --gemm-rate M,N,K [--threads 2]
//   instead: GFLOP/s of the machine's GEMM (C = A W^T, oneDNN) at that shape in f32 and,
//   where the CPU multiplies bf16, in bf16; the median of 7. One JSON object.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#ifdef MOEPP_GEMM_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/stats.h"
#include "kernels/gemm.h"
#include "infer/sampler.h"
#include "infer/session.h"
#include "model/model_folder.h"
#include "model/packed_model.h"

using namespace moepp;
using namespace moepp::bench;

namespace {

std::vector<int32_t> read_ids(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("peer_round: cannot read --ids " + path);
  std::vector<int32_t> ids;
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(std::remove_if(item.begin(), item.end(), [](char c) { return c == '\n' || c == ' '; }), item.end());
    if (!item.empty()) ids.push_back(int32_t(std::stol(item)));
  }
  if (ids.empty()) throw Error("peer_round: " + path + " holds no token ids");
  return ids;
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median GFLOP/s of C[M,N] = A[M,K] W[N,K]^T in f32 and bf16 (0 where bf16 is unavailable).
// oneDNN's int8 matmul (u8 x times s8 W^T, int32 sums, f32 out) on the same shape: the
// machine's int8 GEMM rate, the baseline for q8_0 and q4 prompts, which moepp multiplies
// in int8 (VNNI or AMX). 0 where the build has no oneDNN.
double int8_gemm_seconds(int64_t M, int64_t N, int64_t K) {
#ifdef MOEPP_GEMM_ONEDNN
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc a_md({M, K}, memory::data_type::u8, memory::dims{K, 1});
  const memory::desc b_md({K, N}, memory::data_type::s8, memory::dims{1, K});  // W [N, K] row-major, as W^T
  const memory::desc c_md({M, N}, memory::data_type::f32, memory::dims{N, 1});
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), engine);
  const dnnl::matmul product(pd);
  std::vector<uint8_t> a(size_t(M * K));
  std::vector<int8_t> w(size_t(N * K));
  std::vector<float> c(size_t(M * N));
  Rng rng(5);
  for (auto& v : a) v = uint8_t(rng.next_u64() & 0xFF);
  for (auto& v : w) v = int8_t(int(rng.next_u64() % 255) - 127);
  memory a_mem(pd.src_desc(), engine, a.data()), b_mem(pd.weights_desc(), engine, w.data());
  memory c_mem(pd.dst_desc(), engine, c.data());
  const double seconds = median_seconds(7, [&] {
    product.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream.wait();
  });
  return seconds;
#else
  (void)M, (void)N, (void)K;
  return 1e30;
#endif
}

void print_gemm_rate(const std::vector<double>& mnk) {
  if (mnk.size() != 3) throw Error("--gemm-rate takes M,N,K");
  const int64_t M = int64_t(mnk[0]), N = int64_t(mnk[1]), K = int64_t(mnk[2]);
  std::vector<float> a(size_t(M * K)), w(size_t(N * K)), c(size_t(M * N));
  Rng rng(3);
  for (auto& v : a) v = float(rng.normal());
  for (auto& v : w) v = float(rng.normal());
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const double f32 = flops / median_seconds(7, [&] {
    gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, a.data(), K, w.data(), K, 0.0f, c.data(), N);
  });
  double bf16 = 0;
  if (gemm_bf16_available()) {
    std::vector<uint16_t> ab(a.size()), wb(w.size());
    for (size_t i = 0; i < a.size(); ++i) ab[i] = uint16_t(std::bit_cast<uint32_t>(a[i]) >> 16);
    for (size_t i = 0; i < w.size(); ++i) wb[i] = uint16_t(std::bit_cast<uint32_t>(w[i]) >> 16);
    bf16 = flops / median_seconds(7, [&] { gemm_bf16_nt(M, N, K, ab.data(), K, wb.data(), K, 0.0f, c.data(), N); });
  }
  const double int8 = flops / int8_gemm_seconds(M, N, K);
  std::printf("{\"gemm\": [%lld, %lld, %lld], \"f32_gflops\": %.1f, \"bf16_gflops\": %.1f, \"int8_gops\": %.1f}\n",
              (long long)M, (long long)N, (long long)K, f32 / 1e9, bf16 / 1e9, int8 / 1e9);
}

}  // namespace

int main(int argc, char** argv) try {
  const Flags f(argc, argv);
  if (f.has("gemm-rate")) {
    setup_threads(f, int(f.get_int("threads", 2)));
    print_gemm_rate(f.get_list("gemm-rate", {}));
    return 0;
  }
  const std::string dir = f.get("model", ""), dtype = f.get("dtype", "f32");
  if (dir.empty() || !f.has("ids")) throw Error("usage: peer_round --model DIR --ids FILE [--dtype f32]");
  const std::vector<int32_t> prompt = read_ids(f.get("ids", ""));
  const int64_t decode = f.get_int("decode", 128);
  setup_threads(f, int(f.get_int("threads", 2)));

  // f32 runs the training forward's weights as `moepp generate --dtype f32` does; the
  // other types a packed model.
  auto t0 = std::chrono::steady_clock::now();
  std::optional<LoadedModel> plain;
  std::unique_ptr<PackedModel> packed;
  if (dtype == "f32")
    plain.emplace(load_model_folder(dir, {.in_place = f.get_int("mmap", 0) != 0}));
  else
    packed = load_packed_model_folder(dir, parse_weight_type(dtype));
  const ModelConfig& cfg = plain ? plain->config : packed->config;
  const int64_t len = int64_t(prompt.size()) + decode;
  // moepp's defaults (--kv-dtype auto): an f32 cache beside f32 weights, else bf16.
  const KvDtype kv = default_kv_dtype(plain ? WeightType::f32 : packed->type);
  Session<float> s = plain ? Session<float>(plain->config, plain->params, len, kv) : Session<float>(*packed, len, kv);
  const double load_s = since(t0);
  const double rss_loaded = resident_gb();

  Tensor<float> logits;
  const int64_t prefills = std::max<int64_t>(2, f.get_int("prefills", 2));
  std::vector<double> prefill_s(static_cast<size_t>(prefills));
  for (double& t : prefill_s) {
    s.reset();
    t0 = std::chrono::steady_clock::now();
    s.append(prompt.data(), int64_t(prompt.size()), logits, LogitRows::last);
    t = since(t0);
  }
  const double cold_s = prefill_s[0];
  const double warm_s = median(std::vector<double>(prefill_s.begin() + 1, prefill_s.end()));
  Sampler greedy(SamplerOptions{.temperature = 0});  // argmax, ties to the lower id
  const int64_t V = cfg.vocab_size;
  int32_t next = greedy.sample(logits.data(), V);
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < decode; ++i) {
    s.append(&next, 1, logits, LogitRows::last);
    next = greedy.sample(logits.data(), V);
  }
  const double decode_s = since(t0);
  std::printf(
      "{\"engine\": \"moepp\", \"dtype\": \"%s\", \"kv_dtype\": \"%s\", \"vocab\": %lld, \"load_s\": %.4f, \"prompt\": %zu, "
      "\"prefill_cold_tps\": %.2f, \"prefill_tps\": %.2f, \"decode\": %lld, \"decode_tps\": %.3f, "
      "\"rss_loaded_gb\": %.4f, \"rss_gb\": %.4f, \"rss_peak_gb\": %.4f}\n",
      dtype.c_str(), kv_dtype_name(kv), (long long)cfg.vocab_size, load_s, prompt.size(), double(prompt.size()) / cold_s,
      double(prompt.size()) / warm_s, (long long)decode, double(decode) / decode_s, rss_loaded, resident_gb(),
      resident_gb("VmHWM:"));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
