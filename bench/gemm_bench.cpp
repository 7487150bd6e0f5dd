// bench/gemm: GFLOP/s of our kernels against the configured provider and CBLAS, at the
// four FFN-expert GEMM shapes of the MoE++7B layer, over row counts: the few-row kernel
// (gemm_small, NT), and the panel kernel (NT on weights packed once, NN on B as stored).
// This is where kSmallGemmMaxRows and kPanelNNMaxRows come from.
// Usage: gemm_bench [--threads 2] [--repeats 5]
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/tensor.h"
#include "kernels/gemm.h"
#include "kernels/gemm_panels.h"
#include "kernels/gemm_small.h"

using namespace moepp;
using namespace moepp::bench;

int main(int argc, char** argv) {
  const Flags f(argc, argv);
  set_threads(int(f.get_int("threads", 2)));
  const int repeats = int(f.get_int("repeats", 5));
  struct Shape3 {
    const char* name;
    Trans tb;
    int64_t N, K;
  };
  const std::vector<Shape3> shapes = {{"up   X Wup^T  (NT)", Trans::T, 8192, 1536},
                                      {"down H Wdn^T  (NT)", Trans::T, 1536, 4096},
                                      {"dH   dO Wdn   (NN)", Trans::N, 4096, 1536},
                                      {"dX   dU Wup   (NN)", Trans::N, 1536, 8192}};
  std::printf("%-20s %5s %10s %10s %10s %10s   (GFLOP/s, provider %s)\n", "shape", "M", "small", "panels", "provider", "cblas",
              gemm_provider());
  for (const auto& s : shapes) {
    Tensor<float> B({s.N * s.K});
    for (int64_t i = 0; i < B.numel(); ++i) B[i] = float(i % 7) * 0.01f;
    PanelMatrix panels;
    if (s.tb == Trans::T) panels = PanelMatrix::pack(B.data(), s.N, s.K);
    for (int64_t M : {1, 8, 16, 32, 52, 64, 96, 128, 256}) {
      Tensor<float> A({M, s.K}), C({M, s.N});
      for (int64_t i = 0; i < A.numel(); ++i) A[i] = float(i % 5) * 0.01f;
      const int64_t ldb = s.tb == Trans::T ? s.K : s.N;
      const double flops = 2.0 * double(M) * double(s.N) * double(s.K);
      double small = 0;
      if (M <= kSmallGemmMaxRows && s.tb == Trans::T)
        small = flops / median_seconds(repeats, [&] {
                  gemm_small_f32(Trans::N, s.tb, M, s.N, s.K, 1.0f, A.data(), s.K, B.data(), ldb, 0.0f, C.data(), s.N);
                }) / 1e9;
      // panels: NT on weights packed once (panel_linear); NN on B as stored (panel_matmul).
      const double pan = flops / median_seconds(repeats, [&] {
                           if (s.tb == Trans::T) {
                             panel_linear(A.data(), M, s.K, panels, C.data(), s.N);
                           } else {
                             panel_matmul(A.data(), M, s.K, B.data(), s.K, s.N, s.N, C.data(), s.N);
                           }
                         }) / 1e9;
      const double prov = flops / median_seconds(repeats, [&] {
                            gemm_f32_general(Trans::N, s.tb, M, s.N, s.K, 1.0f, A.data(), s.K, B.data(), ldb, 0.0f, C.data(), s.N);
                          }) / 1e9;
      const double cb = flops / median_seconds(repeats, [&] {
                          gemm_f32_cblas(Trans::N, s.tb, M, s.N, s.K, 1.0f, A.data(), s.K, B.data(), ldb, 0.0f, C.data(), s.N);
                        }) / 1e9;
      std::printf("%-20s %5lld %10.1f %10.1f %10.1f %10.1f\n", s.name, (long long)M, small, pan, prov, cb);
    }
  }
  return 0;
}
