// bench/gemm: GFLOP/s of our kernels against the configured provider and CBLAS, at the
// four FFN-expert GEMM shapes of the MoE++7B layer, over row counts: the few-row kernel
// (gemm_small, NT), and the panel kernel (NT on weights packed once, NN on B as stored);
// then, with 16 weights or gradients used in turn so they stream from memory as in a
// layer: the training forward's NT products (stream_linear), the backward's NN products,
// and the weight gradients (TN, depth = an expert's tokens: panel_matmul_tn, OpenBLAS per
// thread). Each of those rows ends with the kernel the layer runs it on (gemm_grouped's
// route). This is where the routing thresholds in kernels/gemm.cpp come from.
// Usage: gemm_bench [--threads 2] [--pin 1] [--repeats 5] [--only nt|nn|tn]
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/parallel.h"
#include "core/tensor.h"
#include "kernels/gemm.h"
#include "kernels/gemm_panels.h"
#include "kernels/gemm_small.h"
#include "kernels/gemm_stream.h"

using namespace moepp;
using namespace moepp::bench;

namespace {
// What the MoE layer runs this product on (gemm_grouped's routing), for the row's marker.
std::string route(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t ldb) {
  return std::string("   layer: ") + gemm_route_name(gemm_grouped_route(ta, tb, M, N, K, ldb, 1.0f));
}
}  // namespace

int main(int argc, char** argv) {
  const Flags f(argc, argv);
  setup_threads(f, int(f.get_int("threads", 2)));
  const int repeats = int(f.get_int("repeats", 5));
  const std::string only = f.get("only", "");  // one table: nt, nn or tn
  struct Shape3 {
    const char* name;
    Trans tb;
    int64_t N, K;
  };
  const std::vector<Shape3> shapes = {{"up   X Wup^T  (NT)", Trans::T, 8192, 1536},
                                      {"down H Wdn^T  (NT)", Trans::T, 1536, 4096},
                                      {"dH   dO Wdn   (NN)", Trans::N, 4096, 1536},
                                      {"dX   dU Wup   (NN)", Trans::N, 1536, 8192}};
  std::printf("(GFLOP/s, provider %s)\n", gemm_provider());
  for (const auto& s : shapes) {
    if (!only.empty()) break;
    if (&s == &shapes[0])
      std::printf("%-20s %5s %10s %10s %10s %10s   (one weight)\n", "shape", "M", "small", "panels", "provider", "cblas");
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
  // The training forward's NT products (x W^T, W as stored), with 16 weights used in turn
  // so they stream from memory: stream_linear against the provider and the few-row kernel,
  // and the panel kernel on weights packed beforehand (what inference runs; training
  // would have to pack every weight after every optimizer step).
  constexpr int kWeights = 16;
  if (only.empty() || only == "nt")
    std::printf("\n%-20s %5s %10s %10s %10s %10s %10s   (GFLOP/s; %d weights in turn)\n", "shape", "M", "small",
                "stream", "provider", "cblas", "prepacked", kWeights);
  for (const auto& s : shapes) {
    if (s.tb != Trans::T || !(only.empty() || only == "nt")) continue;
    std::vector<Tensor<float>> Ws;
    std::vector<PanelMatrix> packed;
    for (int e = 0; e < kWeights; ++e) {
      Ws.emplace_back(Shape{s.N, s.K});
      for (int64_t i = 0; i < Ws.back().numel(); ++i) Ws.back()[i] = float((i + e) % 7) * 0.01f;
      packed.push_back(PanelMatrix::pack(Ws.back().data(), s.N, s.K));
    }
    for (int64_t M : {1, 4, 8, 12, 16, 32, 40, 44, 47, 52, 56, 60, 63, 64, 80, 96, 128, 256}) {
      Tensor<float> A({M, s.K}), C({M, s.N});
      for (int64_t i = 0; i < A.numel(); ++i) A[i] = float(i % 5) * 0.01f;
      const double flops = kWeights * 2.0 * double(M) * double(s.N) * double(s.K);
      auto rate = [&](auto&& product) {
        return flops / median_seconds(repeats, [&] {
                 for (int e = 0; e < kWeights; ++e) product(e);
               }) / 1e9;
      };
      const double small = M > kSmallGemmMaxRows ? 0.0 : rate([&](int e) {
        gemm_small_f32(Trans::N, Trans::T, M, s.N, s.K, 1.0f, A.data(), s.K, Ws[e].data(), s.K, 0.0f, C.data(), s.N);
      });
      const double str = rate([&](int e) { stream_linear(A.data(), M, s.K, Ws[e].data(), s.N, s.K, s.K, C.data(), s.N); });
      const double prov = rate([&](int e) {
        gemm_f32_general(Trans::N, Trans::T, M, s.N, s.K, 1.0f, A.data(), s.K, Ws[e].data(), s.K, 0.0f, C.data(), s.N);
      });
      const double cb = rate([&](int e) {
        gemm_f32_cblas(Trans::N, Trans::T, M, s.N, s.K, 1.0f, A.data(), s.K, Ws[e].data(), s.K, 0.0f, C.data(), s.N);
      });
      const double pre = rate([&](int e) { panel_linear(A.data(), M, s.K, packed[size_t(e)], C.data(), s.N); });
      std::printf("%-20s %5lld %10.1f %10.1f %10.1f %10.1f %10.1f%s\n", s.name, (long long)M, small, str, prov, cb, pre,
                  route(Trans::N, Trans::T, M, s.N, s.K, s.K).c_str());
    }
  }

  // The backward's NN products again, with 16 weights used in turn as in a layer's
  // backward, so they stream from memory (the table above reuses one weight).
  if (only.empty() || only == "nn")
    std::printf("\n%-20s %5s %10s %10s %10s %10s   (GFLOP/s; %d weights in turn)\n", "shape", "M", "", "panels",
                "provider", "cblas", kWeights);
  for (const auto& s : shapes) {
    if (s.tb != Trans::N || !(only.empty() || only == "nn")) continue;
    std::vector<Tensor<float>> Bs;
    for (int e = 0; e < kWeights; ++e) {
      Bs.emplace_back(Shape{s.K, s.N});
      for (int64_t i = 0; i < Bs.back().numel(); ++i) Bs.back()[i] = float((i + e) % 7) * 0.01f;
    }
    for (int64_t M : {16, 52, 64, 128, 256}) {
      Tensor<float> A({M, s.K}), C({M, s.N});
      for (int64_t i = 0; i < A.numel(); ++i) A[i] = float(i % 5) * 0.01f;
      const double flops = kWeights * 2.0 * double(M) * double(s.N) * double(s.K);
      auto rate = [&](auto&& product) {
        return flops / median_seconds(repeats, [&] {
                 for (auto& b : Bs) product(b.data());
               }) / 1e9;
      };
      const double pan = rate([&](const float* b) { panel_matmul(A.data(), M, s.K, b, s.K, s.N, s.N, C.data(), s.N); });
      const double prov = rate([&](const float* b) {
        gemm_f32_general(Trans::N, Trans::N, M, s.N, s.K, 1.0f, A.data(), s.K, b, s.N, 0.0f, C.data(), s.N);
      });
      const double cb = rate([&](const float* b) {
        gemm_f32_cblas(Trans::N, Trans::N, M, s.N, s.K, 1.0f, A.data(), s.K, b, s.N, 0.0f, C.data(), s.N);
      });
      std::printf("%-20s %5lld %10s %10.1f %10.1f %10.1f%s\n", s.name, (long long)M, "", pan, prov, cb,
                  route(Trans::N, Trans::N, M, s.N, s.K, s.N).c_str());
    }
  }

  // The weight gradients dW += dY^T X (TN): depth = an expert's tokens, output = a weight.
  // As in a layer's backward, 16 experts' gradients are updated in turn, so they stream
  // from memory (one 50 MB gradient alone would stay in a large L3 and flatter the kernels
  // that walk it in blocks).
  constexpr int kExperts = 16;
  if (only.empty() || only == "tn")
    std::printf("\n%-20s %5s %10s %10s %10s %10s %10s   (GFLOP/s; dW (+)= A^T B for %d experts in turn, depth = tokens)\n",
                "shape", "depth", "", "panels", "provider", "cblas", "cblas/thr", kExperts);
  struct ShapeTN {
    const char* name;
    int64_t M, N;
  };
  for (const auto& s : {ShapeTN{"dWup dU^T X   (TN)", 8192, 1536}, ShapeTN{"dWdn dO^T H   (TN)", 1536, 4096}}) {
    if (!(only.empty() || only == "tn")) break;
    std::vector<Tensor<float>> C;
    for (int e = 0; e < kExperts; ++e) C.emplace_back(Shape{s.M, s.N});
    for (int64_t K : {8, 16, 32, 52, 64, 96, 128, 256}) {
      Tensor<float> A({K, s.M}), B({K, s.N});
      for (int64_t i = 0; i < A.numel(); ++i) A[i] = float(i % 5) * 0.01f;
      for (int64_t i = 0; i < B.numel(); ++i) B[i] = float(i % 7) * 0.01f;
      const double flops = kExperts * 2.0 * double(s.M) * double(s.N) * double(K);
      auto rate = [&](auto&& product) {
        return flops / median_seconds(repeats, [&] {
                 for (auto& c : C) product(c.data());
               }) / 1e9;
      };
      const double pan =
          rate([&](float* c) { panel_matmul_tn(A.data(), s.M, s.M, B.data(), K, s.N, s.N, c, s.N, true); });
      const double prov = rate([&](float* c) {
        gemm_f32_general(Trans::T, Trans::N, s.M, s.N, K, 1.0f, A.data(), s.M, B.data(), s.N, 1.0f, c, s.N);
      });
      const double cb = rate([&](float* c) {
        gemm_f32_cblas(Trans::T, Trans::N, s.M, s.N, K, 1.0f, A.data(), s.M, B.data(), s.N, 1.0f, c, s.N);
      });
      const double cbt = rate([&](float* c) {
        gemm_f32_cblas_per_thread(Trans::T, Trans::N, s.M, s.N, K, 1.0f, A.data(), s.M, B.data(), s.N, 1.0f, c, s.N);
      });
      std::printf("%-20s %5lld %10s %10.1f %10.1f %10.1f %10.1f%s\n", s.name, (long long)K, "", pan, prov, cb, cbt,
                  route(Trans::T, Trans::N, s.M, s.N, K, s.N).c_str());
    }
  }
  return 0;
}
