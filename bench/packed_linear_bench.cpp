// bench/packed_linear: one packed product y = x W^T (kernels/quant.h) for f32, bf16, q8_0
// and q4 weights at several row counts of x, on a Mixtral-sized FFN matrix (2816 x 1024 by
// default). Each figure is the median over rounds of one pass over 16 distinct copies of
// the matrix (48-180 MB, so the weights come from memory as in decode). Prints ms per
// product, weight GB/s, GFLOP/s, which path ran (the few-row kernel with f32 or int8
// activations, the bf16 GEMM, or the f32 panels), and each format's time over f32's in the same run.
// Usage: packed_linear_bench [--rows 1,4,8,9,16,64,256] [--n 2816] [--k 1024]
//                            [--rounds 15] [--threads 2] [--pin 1]
#include <cstdio>
#include <vector>

#include "bench_util.h"
#include "core/rng.h"
#include "kernels/quant.h"

using namespace moepp;

int main(int argc, char** argv) try {
  const bench::Flags f(argc, argv);
  const int threads = int(f.get_int("threads", 2));
  bench::setup_threads(f, threads);
  const int64_t N = f.get_int("n", 2816), K = f.get_int("k", 1024);
  const int rounds = int(f.get_int("rounds", 15));
  const std::vector<double> rows = f.get_list("rows", {1, 4, 8, 9, 16, 64, 256});
  constexpr int kCopies = 16;
  Rng rng(7);
  std::vector<float> w(size_t(N * K));
  for (auto& v : w) v = float(rng.normal());
  std::printf("packed_linear: W [%lld, %lld], %d copies, %d threads, median of %d rounds\n", (long long)N,
              (long long)K, kCopies, threads, rounds);
  std::printf("%-5s %5s | %9s %8s %9s | %-14s | %s\n", "dtype", "rows", "ms", "GB/s", "GFLOP/s", "path", "time / f32");
  std::vector<std::vector<PackedMatrix>> packed;
  for (WeightType t : kWeightTypes) {
    packed.emplace_back();
    for (int c = 0; c < kCopies; ++c) packed.back().push_back(PackedMatrix::pack(w.data(), N, K, t));
  }
  for (double r : rows) {
    const int64_t M = int64_t(r);
    std::vector<float> x(size_t(M * K)), y(size_t(M * N));
    for (auto& v : x) v = float(rng.normal());
    double f32_s = 0;
    for (size_t ti = 0; ti < packed.size(); ++ti) {
      const auto& mats = packed[ti];
      const double s = bench::median_seconds(rounds, [&] {
                         for (const auto& p : mats) packed_linear(x.data(), M, K, p, y.data(), N);
                       }) / kCopies;
      if (ti == 0) f32_s = s;
      const PackedMatrix& p = mats[0];
      const char* path = p.type == WeightType::f32 ? "f32 panels"
                         : packed_linear_uses_bf16(p, M) ? "bf16 GEMM"
                         : packed_products_use_int8(p.type, M) ? "few-row int8 x"
                         : M <= 8                        ? "few-row f32 x"
                                                         : "f32 GEMM";
      std::printf("%-5s %5lld | %9.3f %8.1f %9.1f | %-14s | %.2f\n", weight_type_name(p.type), (long long)M, s * 1e3,
                  double(p.bytes()) / s / 1e9, 2.0 * double(M * N * K) / s / 1e9, path, s / f32_s);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
