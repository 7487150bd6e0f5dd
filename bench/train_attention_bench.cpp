// bench/train_attention: training attention, a forward that keeps its softmax stats and the
// backward that recomputes the probabilities from them (kernels/attention.h), with f32
// products against bf16 ones (inside a bf16 GemmPrecisionScope, what `train --precision
// bf16` runs: kernels/attention_bf16.h), alternating in one process. Shapes: the paper-0.6b preset at its context (12 heads of 64,
// 2048 positions, one sequence) and the small preset as train_bench runs it (8 heads over 4
// of 32, 8 sequences of 128). Reports the median milliseconds of each pass and the bf16
// output's largest difference from the f32 one.
// Usage: train_attention_bench [--repeats 7] [--threads 2] [--pin 1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "kernels/attention.h"
#include "kernels/attention_bf16.h"
#include "kernels/mixed_precision.h"

using namespace moepp;
using namespace moepp::bench;

int main(int argc, char** argv) {
  const Flags f(argc, argv);
  const int64_t repeats = f.get_int("repeats", 7);
  setup_threads(f, int(f.get_int("threads", 2)));
  if (!gemm_bf16_available() || !attention_bf16_available(2)) {
    std::printf("train_attention bench: this CPU or build has no AVX-512 BF16 products; nothing to compare\n");
    return 0;
  }
  struct Case {
    const char* name;
    AttentionShape s;
  };
  const Case cases[] = {{"paper-0.6b, 1 x 2048", {1, 2048, 12, 12, 64}}, {"small, 8 x 128", {8, 128, 8, 4, 32}}};
  std::printf("train_attention bench: forward (softmax stats kept) and backward, f32 against bf16 products, %d threads\n",
              max_threads());
  std::printf("%-22s | %9s %9s %7s | %9s %9s %7s | %10s\n", "shape", "fwd f32", "fwd bf16", "speedup", "bwd f32",
              "bwd bf16", "speedup", "max |diff|");
  for (const Case& c : cases) {
    const AttentionShape& s = c.s;
    const size_t nq = size_t(s.batch * s.seq * s.q_heads * s.head_dim), nkv = size_t(s.batch * s.seq * s.kv_heads * s.head_dim);
    Rng rng(5);
    std::vector<float> q(nq), k(nkv), v(nkv), dout(nq);
    for (auto* x : {&q, &k, &v, &dout})
      for (auto& e : *x) e = float(rng.normal());
    std::vector<float> stats(size_t(softmax_stats_size(s))), dq(nq), dk(nkv), dv(nkv);
    std::vector<float> out32(nq), out16(nq);
    std::vector<double> fwd[2], bwd[2];
    for (int64_t rep = -1; rep < repeats; ++rep)  // rep -1 warms both up
      for (int bf16 = 0; bf16 < 2; ++bf16) {
        const GemmPrecisionScope scope(bf16 ? GemmPrecision::bf16 : GemmPrecision::f32);
        float* out = bf16 ? out16.data() : out32.data();
        const double tf = seconds_of([&] { attention_forward(q.data(), k.data(), v.data(), out, stats.data(), s); });
        const double tb = seconds_of([&] {
          attention_backward(q.data(), k.data(), v.data(), stats.data(), dout.data(), dq.data(), dk.data(), dv.data(), s);
        });
        if (rep >= 0) {
          fwd[bf16].push_back(tf);
          bwd[bf16].push_back(tb);
        }
      }
    double diff = 0;
    for (size_t i = 0; i < nq; ++i) diff = std::max(diff, double(std::abs(out32[i] - out16[i])));
    const double f32f = median(fwd[0]), f16f = median(fwd[1]), f32b = median(bwd[0]), f16b = median(bwd[1]);
    std::printf("%-22s | %9.2f %9.2f %6.2fx | %9.2f %9.2f %6.2fx | %10.2e\n", c.name, 1e3 * f32f, 1e3 * f16f, f32f / f16f,
                1e3 * f32b, 1e3 * f16b, f32b / f16b, diff);
  }
  return 0;
}
