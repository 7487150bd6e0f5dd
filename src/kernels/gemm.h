// GEMM: C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major, op = identity or
// transpose. f32 goes to the configured provider (oneDNN's matmul with primitives cached
// per shape, or CBLAS); f64, the verification path, goes to CBLAS or a plain loop.
// gemm_grouped runs a list of independent problems (one per expert) back to back, each
// using every thread, so callers never nest parallel regions around it.
#pragma once
#include <cstdint>
#include <vector>

namespace moepp {

enum class Trans { N, T };

template <typename T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

template <typename T>
struct GemmProblem {
  int64_t M = 0, N = 0, K = 0;
  const T* A = nullptr;
  int64_t lda = 0;
  const T* B = nullptr;
  int64_t ldb = 0;
  T* C = nullptr;
  int64_t ldc = 0;
  T beta = 0;
};

template <typename T>
void gemm_grouped(Trans ta, Trans tb, const std::vector<GemmProblem<T>>& problems);

// The kernel an f32 product runs on. gemm<float> picks among stream, small and provider;
// gemm_grouped<float> (the experts' products, alpha = 1) also among panels, panels_tn and
// cblas_per_thread. The choices and their measured ranges: docs/decisions.md, bench/gemm.
enum class GemmRoute { stream, small, panels, panels_tn, cblas_per_thread, provider };
const char* gemm_route_name(GemmRoute r);
GemmRoute gemm_route(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, float beta);
GemmRoute gemm_grouped_route(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t ldb, float beta);

// C[M, N] = A[M, K] W[N, K]^T + beta C with A and W bf16 (raw bits, row strides lda, ldw) and
// C f32, accumulated in f32: the products of packed bf16 and q8_0 weights with many rows
// (kernels/quant.h); gemm_bf16 is the same with op(A), op(B) and alpha, for mixed-precision
// training (kernels/mixed_precision.h). Available where oneDNN is the provider and the CPU has AVX-512 BF16
// (or AMX); neither may be called otherwise.
bool gemm_bf16_available();
void gemm_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_bf16_nt(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* W, int64_t ldw,
                  float beta, float* C, int64_t ldc);

// Name of the f32 provider chosen at configure time ("onednn" or "cblas").
const char* gemm_provider();

// The configured f32 provider alone, without the few-row kernels (benchmarks compare them).
void gemm_f32_general(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                      int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The f32 provider that is not the configured one, when built in; used by benchmarks to
// compare providers. Returns false when unavailable.
bool gemm_f32_cblas(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                    float* C, int64_t ldc);

// Whether gemm_f32_cblas_per_thread can run here (the CBLAS built in is OpenBLAS).
bool gemm_cblas_per_thread_available();

// Whether the CBLAS built in is OpenBLAS running SGEMM kernels written for AVX-512 on
// this CPU (its core name says so). Where it falls back to AVX2 kernels (a CPU newer than
// the library, such as AMD Zen 5 under Debian's 0.3.21) it runs at about half our panel
// kernel's rate, and the weight gradients stay on the panel kernel and the provider.
bool gemm_cblas_has_avx512_kernels();

// OpenBLAS run single-threaded on each of our OpenMP threads, each computing a band of C's
// rows. OpenBLAS's own pthreads and our OpenMP workers, both spinning between calls, fight
// over the cores when their calls interleave (docs/decisions.md); this way no thread of
// OpenBLAS's runs at all. Returns false when the CBLAS built in is not OpenBLAS, or
// inside a parallel region.
bool gemm_f32_cblas_per_thread(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                               int64_t ldc);

}  // namespace moepp
