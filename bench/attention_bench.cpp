// bench/attention: decode attention - one new token's query heads against a KV cache of
// L positions - in the kernel the decoder step uses (kernels/attention: the query heads of a
// kv-head group read each key and value row once, vectorised dot products and exp) against
// the per-head scalar loop the inference session ran before it (kept below, verbatim in
// substance, as the baseline). Mixtral's attention shape by default: 32 query heads over 8
// kv heads of 128. Reports the median microseconds per call at each context, alternating
// the two kernels, and their largest output difference.
// Usage: attention_bench [--context 512,2048] [--rows 1] [--repeats 51] [--threads 2] [--pin 1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "kernels/attention.h"

using namespace moepp;
using namespace moepp::bench;

namespace {

// The session's loop before the decoder step: per (row, q head), scores, softmax, then
// the weighted sum of values, one scalar product at a time.
void scalar_decode_attention(const float* q, const float* K, const float* Vc, float* ctx, int64_t n, int64_t p0,
                             int64_t H, int64_t Hkv, int64_t hd) {
  const int64_t group = H / Hkv, kvD = Hkv * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  parallel_for(n * H, [&](int64_t ih) {
    const int64_t i = ih / H, h = ih % H, kvh = h / group, last = p0 + i;
    const float* qi = q + (i * H + h) * hd;
    std::vector<float> sc(static_cast<size_t>(last + 1));
    float mx = -INFINITY;
    for (int64_t j = 0; j <= last; ++j) {
      const float* kj = K + j * kvD + kvh * hd;
      float d = 0;
      for (int64_t e = 0; e < hd; ++e) d += qi[e] * kj[e];
      sc[size_t(j)] = d * scale;
      mx = std::max(mx, sc[size_t(j)]);
    }
    float sum = 0;
    for (auto& s : sc) sum += (s = std::exp(s - mx));
    float* o = ctx + (i * H + h) * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t j = 0; j <= last; ++j) {
      const float p = sc[size_t(j)] / sum;
      const float* vj = Vc + j * kvD + kvh * hd;
      for (int64_t e = 0; e < hd; ++e) o[e] += p * vj[e];
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f(argc, argv);
  const auto contexts = f.get_list("context", {512, 2048});
  const int64_t rows = f.get_int("rows", 1), H = f.get_int("heads", 32), Hkv = f.get_int("kv-heads", 8);
  const int64_t hd = f.get_int("head-dim", 128), repeats = f.get_int("repeats", 51);
  setup_threads(f, int(f.get_int("threads", 2)));
  std::printf("attention bench: decode of %lld row(s), %lld q heads over %lld kv heads of %lld, %d threads\n",
              (long long)rows, (long long)H, (long long)Hkv, (long long)hd, max_threads());
  std::printf("%8s | %12s %12s | %7s | %10s\n", "context", "scalar us", "kernel us", "speedup", "max |diff|");
  for (double c : contexts) {
    const int64_t L = int64_t(c), kvD = Hkv * hd, p0 = L - rows;
    Rng rng(3);
    std::vector<float> q(size_t(rows * H * hd)), K(size_t(L * kvD)), V(size_t(L * kvD));
    for (auto* v : {&q, &K, &V})
      for (auto& x : *v) x = float(rng.normal());
    std::vector<float> out_scalar(q.size()), out_kernel(q.size());
    std::vector<const float*> keys(size_t(rows), K.data()), values(size_t(rows), V.data());
    std::vector<int64_t> context(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) context[size_t(r)] = p0 + r + 1;
    const AttentionRows<float> a{.rows = rows, .q_heads = H, .kv_heads = Hkv, .head_dim = hd, .keys = keys.data(),
                                 .values = values.data(), .context = context.data(), .kv_stride = kvD};
    std::vector<double> ts, tk;
    for (int64_t rep = -1; rep < repeats; ++rep) {  // rep -1 warms both up
      const double s = seconds_of([&] {
        scalar_decode_attention(q.data(), K.data(), V.data(), out_scalar.data(), rows, p0, H, Hkv, hd);
      });
      const double k = seconds_of([&] { attention_rows_forward(q.data(), a, out_kernel.data()); });
      if (rep >= 0) {
        ts.push_back(s);
        tk.push_back(k);
      }
    }
    double diff = 0;
    for (size_t i = 0; i < q.size(); ++i) diff = std::max(diff, double(std::abs(out_scalar[i] - out_kernel[i])));
    const double ms = median(ts), mk = median(tk);
    std::printf("%8lld | %12.1f %12.1f | %6.2fx | %10.2e\n", (long long)L, 1e6 * ms, 1e6 * mk, ms / mk, diff);
  }
  return 0;
}
