// bench/packed_linear: one packed product y = x W^T (kernels/quant.h) for f32, bf16, q8_0
// and q4 weights at several row counts of x, on a Mixtral-sized FFN matrix (2816 x 1024 by
// default). Each figure is the median over rounds of one pass over distinct copies of the
// matrix, at least 16 and enough to span 134 MB (4x a 32 MB L3), so the weights come from
// memory as in decode (16 copies of the q4 matrix are 26 MB, which such an L3 holds).
// Prints ms per product, weight GB/s, GFLOP/s, which path ran (the few-row kernel with f32 or int8
// activations, the bf16 GEMM, or the f32 panels), and each format's time over f32's in the same run.
// For q8_0 and q4 it also times each integer kernel directly (the few-row vpdpbusd kernel up
// to 8 rows, the int8 GEMM at any row count where the CPU has VNNI, the AMX tiles where it
// has them), whichever one packed_linear picks.
// Usage: packed_linear_bench [--rows 1,4,8,9,16,64,256] [--n 2816] [--k 1024]
//                            [--rounds 15] [--threads 2] [--pin 1]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "core/rng.h"
#include "core/parallel.h"
#include "kernels/amx_int8.h"
#include "kernels/gemm.h"
#include "kernels/int8_dot.h"
#include "kernels/int8_gemm.h"
#include "kernels/quant.h"

using namespace moepp;

namespace {

using Product = std::function<void(const float* x, const PackedMatrix& W, float* y)>;

// The kernels packed_linear chooses among for q8_0 and q4, each run directly so that the
// bench compares them whichever one packed_linear picks: the few-row int8 kernel (up to 8
// rows), the int8 GEMM (VNNI), the AMX tiles (where the CPU has AMX-INT8) and, from 9 rows,
// the weights rounded to bf16 for the bf16 GEMM (where the CPU multiplies bf16).
std::vector<std::pair<std::string, Product>> integer_paths(int64_t M, int64_t K) {
  std::vector<std::pair<std::string, Product>> out;
  if (M <= 8)
    out.emplace_back("vnni int8 x", [M, K](const float* x, const PackedMatrix& W, float* y) {
      static Int8Rows q;
      quantize_rows_int8(x, M, K, K, q, W.type);
      parallel_for((W.rows + 15) / 16, [&](int64_t c) {
        int8_linear_rows(q, W, c * 16, std::min(W.rows, c * 16 + 16), y, W.rows, false);
      });
    });
  if (M > 8 && gemm_bf16_available())
    out.emplace_back("bf16 GEMM", [M, K](const float* x, const PackedMatrix& W, float* y) {
      static UninitVector<uint16_t> xb;
      packed_linear_bf16_padded(round_rows_to_bf16_padded(x, M, K, K, xb), M, W, y, W.rows, false);
    });
  if (int8_gemm_available())
    out.emplace_back("int8 GEMM", [M, K](const float* x, const PackedMatrix& W, float* y) {
      static TileRows q;
      quantize_rows_for_tiles(x, M, K, K, q);
      int8_gemm(q, W, y, W.rows, false);
    });
  if (amx_int8_available())
    out.emplace_back("amx int8 x", [M, K](const float* x, const PackedMatrix& W, float* y) {
      static TileRows q;
      quantize_rows_for_tiles(x, M, K, K, q);
      parallel_for((W.rows + 15) / 16, [&](int64_t c) {
        amx_int8_linear(q, W, c * 16, std::min(W.rows, c * 16 + 16), y, W.rows, false);
      });
    });
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  const bench::Flags f(argc, argv);
  const int threads = int(f.get_int("threads", 2));
  bench::setup_threads(f, threads);
  const int64_t N = f.get_int("n", 2816), K = f.get_int("k", 1024);
  const int rounds = int(f.get_int("rounds", 15));
  const std::vector<double> rows = f.get_list("rows", {1, 4, 8, 9, 16, 64, 256});
  // Bytes each format's copies span: 4x a 32 MB L3 (sysconf's figure for the L3 is not to
  // be trusted on these VMs: 335 MB on one whose CPU reports 32 MB).
  constexpr int64_t fill = int64_t(128) << 20;
  Rng rng(7);
  std::vector<float> w(size_t(N * K));
  for (auto& v : w) v = float(rng.normal());
  std::vector<std::vector<PackedMatrix>> packed;
  std::string copies;
  for (WeightType t : kWeightTypes) {
    packed.emplace_back();
    packed.back().push_back(PackedMatrix::pack(w.data(), N, K, t));
    const int64_t bytes = packed.back()[0].bytes(), n = std::max<int64_t>(16, (fill + bytes - 1) / bytes);
    while (int64_t(packed.back().size()) < n) packed.back().push_back(PackedMatrix::pack(w.data(), N, K, t));
    copies += std::string(copies.empty() ? "" : ", ") + weight_type_name(t) + " " + std::to_string(n);
  }
  std::printf("packed_linear: W [%lld, %lld], %d threads, median of %d rounds; copies (%.0f MB of each format): %s\n",
              (long long)N, (long long)K, threads, rounds, double(fill) / 1e6, copies.c_str());
  std::printf("%-5s %5s | %9s %8s %9s | %-14s | %s\n", "dtype", "rows", "ms", "GB/s", "GFLOP/s", "path", "time / f32");
  for (double r : rows) {
    const int64_t M = int64_t(r);
    std::vector<float> x(size_t(M * K)), y(size_t(M * N));
    for (auto& v : x) v = float(rng.normal());
    double f32_s = 0;
    for (size_t ti = 0; ti < packed.size(); ++ti) {
      const auto& mats = packed[ti];
      const double s = bench::median_seconds(rounds, [&] {
                         for (const auto& p : mats) packed_linear(x.data(), M, K, p, y.data(), N);
                       }) / double(mats.size());
      if (ti == 0) f32_s = s;
      const PackedMatrix& p = mats[0];
      const char* path = p.type == WeightType::f32 ? "f32 panels"
                         : packed_linear_uses_bf16(p, M) ? "bf16 GEMM"
                         : packed_products_use_amx(p.type, M)  ? "amx int8 x"
                         : packed_products_use_int8(p.type, M) ? (M > 24 ? "int8 GEMM" : "few-row int8 x")
                         : M <= 8                        ? "few-row f32 x"
                                                         : "f32 GEMM";
      const auto report = [&](const char* how, double secs) {
        std::printf("%-5s %5lld | %9.3f %8.1f %9.1f | %-14s | %.2f\n", weight_type_name(p.type), (long long)M,
                    secs * 1e3, double(p.bytes()) / secs / 1e9, 2.0 * double(M * N * K) / secs / 1e9, how, secs / f32_s);
      };
      report(path, s);
      if (p.type == WeightType::q8_0 || p.type == WeightType::q4)
        for (const auto& [how, product] : integer_paths(M, K)) {
          const double alt = bench::median_seconds(rounds, [&] {
                               for (const auto& q : mats) product(x.data(), q, y.data());
                             }) / double(mats.size());
          report(how.c_str(), alt);
        }
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
