#include "kernels/gemm.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <exception>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm_panels.h"
#include "kernels/gemm_small.h"
#include "kernels/gemm_stream.h"
#include "kernels/mixed_precision.h"
#include "kernels/product_clock.h"

#ifdef MOEPP_HAVE_CBLAS
#include <cblas.h>
#include <omp.h>

#include <algorithm>

// OpenBLAS's thread-count controls, weak: absent (null) when the CBLAS found is another.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));
extern "C" char* openblas_get_corename(void) __attribute__((weak));
#endif

namespace moepp {

// Provider entry points (gemm_onednn.cpp).
void gemm_f32_onednn(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                     float* C, int64_t ldc);

namespace {

void check_args(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                int64_t ldb, int64_t ldc) {
  MOEPP_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  MOEPP_CHECK(lda >= (ta == Trans::N ? K : M) && lda >= 1, "gemm: lda=", lda, " too small");
  MOEPP_CHECK(ldb >= (tb == Trans::N ? N : K) && ldb >= 1, "gemm: ldb=", ldb, " too small");
  MOEPP_CHECK(ldc >= N && ldc >= 1, "gemm: ldc=", ldc, " too small for N=", N);
}

template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
}

// Plain loop, parallel over rows of C; only used for f64 when no CBLAS is built in.
template <typename T>
void gemm_loop(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  parallel_for(M, [&](int64_t i) {
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        const T a = ta == Trans::N ? A[i * lda + p] : A[p * lda + i];
        const T b = tb == Trans::N ? B[p * ldb + j] : B[j * ldb + p];
        acc += a * b;
      }
      T& c = C[i * ldc + j];
      c = alpha * acc + (beta == T(0) ? T(0) : beta * c);
    }
  });
}

#ifdef MOEPP_HAVE_CBLAS
CBLAS_TRANSPOSE cblas_trans(Trans t) { return t == Trans::N ? CblasNoTrans : CblasTrans; }
#endif

}  // namespace

bool gemm_f32_cblas(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                    float* C, int64_t ldc) {
#ifdef MOEPP_HAVE_CBLAS
  cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), int(M), int(N), int(K), alpha, A,
              int(lda), B, int(ldb), beta, C, int(ldc));
  return true;
#else
  return false;
#endif
}

bool gemm_cblas_per_thread_available() {
#ifdef MOEPP_HAVE_CBLAS
  return openblas_set_num_threads != nullptr && openblas_get_num_threads != nullptr;
#else
  return false;
#endif
}

bool gemm_cblas_has_avx512_kernels() {
#ifdef MOEPP_HAVE_CBLAS
  static const bool avx512 = [] {
    if (openblas_get_corename == nullptr) return false;
    const char* name = openblas_get_corename();
    std::string core = name ? name : "";
    for (char& ch : core) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    // OpenBLAS's cores whose SGEMM kernels are written for AVX-512. A CPU it does not know
    // (Debian's 0.3.21 on AMD Zen 5 says "Haswell") gets AVX2 kernels at half the width.
    for (const char* known : {"skylakex", "cooperlake", "sapphirerapids"})
      if (core.find(known) != std::string::npos) return true;
    return false;
  }();
  return avx512;
#else
  return false;
#endif
}

bool gemm_f32_cblas_per_thread(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                               int64_t ldc) {
#ifdef MOEPP_HAVE_CBLAS
  if (!gemm_cblas_per_thread_available() || omp_in_parallel()) return false;
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return true;
  const int threads = int(std::min<int64_t>(max_threads(), std::max<int64_t>(1, M / 16)));
  const int saved = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel num_threads(threads)
  {
    // Row bands of C in multiples of 16 (whole vectors for OpenBLAS's kernels).
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int64_t m0 = t == 0 ? 0 : M * t / n / 16 * 16, m1 = t + 1 == n ? M : M * (t + 1) / n / 16 * 16;
    if (m1 > m0) {
      const float* a = ta == Trans::N ? A + m0 * lda : A + m0;
      cblas_sgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), int(m1 - m0), int(N), int(K), alpha, a, int(lda), B,
                  int(ldb), beta, C + m0 * ldc, int(ldc));
    }
  }
  openblas_set_num_threads(saved);
  return true;
#else
  return false;
#endif
}

const char* gemm_route_name(GemmRoute r) {
  switch (r) {
    case GemmRoute::stream: return "stream";
    case GemmRoute::small: return "small";
    case GemmRoute::panels: return "panels";
    case GemmRoute::panels_tn: return "panels";
    case GemmRoute::cblas_per_thread: return "cblas/thr";
    case GemmRoute::provider: return "provider";
  }
  return "?";
}

GemmRoute gemm_route(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  // An expert's few dozen tokens against a weight as stored (the training forward): stream
  // the weight once, broadcast against a transposed copy of the rows, instead of the copy
  // of the weight oneDNN makes per call.
  if (ta == Trans::N && tb == Trans::T && alpha == 1.0f && (beta == 0.0f || beta == 1.0f) &&
      stream_linear_suits(M, K))
    return GemmRoute::stream;
  // Fewer rows (decode): stream B once with dot products instead of packing it.
  if (gemm_small_f32_takes(ta, tb, M, N, K)) return GemmRoute::small;
  return GemmRoute::provider;
}

// Depth up to which the weight gradients stay on the panel kernel when OpenBLAS is there.
constexpr int64_t kTnPanelsOverBlasMaxDepth = 40;

GemmRoute gemm_grouped_route(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t ldb, float beta) {
  const bool beta01 = beta == 0.0f || beta == 1.0f;
  // The NN products of the experts' backward (dX = dU W, dH = dO W, W as stored) run on
  // the panel kernel, which reads W in place where oneDNN copies it per call: faster from
  // 8 rows up (bench/gemm). Where W's rows alias in the cache (dH: 16 KB apart) its slices
  // are copied first. Up to 128 rows, where the machines measured agree
  // (docs/decisions.md, "Panel kernel tuning").
  if (ta == Trans::N && tb == Trans::N && M >= 8 && beta01 && (panel_matmul_suits(ldb) || M <= 128))
    return GemmRoute::panels;
  // The experts' weight gradients (dW += dY^T X, depth = an expert's tokens). Up to 40
  // tokens the panel kernel leads: it keeps X in L2 and streams dW row by row. Deeper,
  // OpenBLAS's TN GEMM does where it runs AVX-512 kernels, single-threaded on each of our
  // threads so that its own pthreads never contend with ours; elsewhere, and without
  // OpenBLAS: panels up to 1024 tokens, the provider beyond.
  if (ta == Trans::T && tb == Trans::N && beta01) {
    if (K > kTnPanelsOverBlasMaxDepth && gemm_cblas_per_thread_available() && gemm_cblas_has_avx512_kernels())
      return GemmRoute::cblas_per_thread;
    if (panel_matmul_tn_suits(K)) return GemmRoute::panels_tn;
  }
  return gemm_route(ta, tb, M, N, K, 1.0f, beta);
}

#ifndef MOEPP_GEMM_ONEDNN
bool gemm_bf16_available() { return false; }
void gemm_bf16(Trans, Trans, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
               float*, int64_t) {
  fail("gemm_bf16: this build has no bf16 GEMM (oneDNN is not its provider)");
}
void gemm_bf16_nt(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float, float*, int64_t) {
  fail("gemm_bf16_nt: this build has no bf16 GEMM (oneDNN is not its provider)");
}
#endif

const char* gemm_provider() {
#ifdef MOEPP_GEMM_ONEDNN
  return "onednn";
#else
  return "cblas";
#endif
}

namespace {

// Runs one f32 product on the kernel `route` names, or on the general provider where that
// kernel declines it. The special kernels take alpha = 1 and beta 0 or 1 (the routes say so).
void run_on_route(GemmRoute route, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  const bool add = beta == 1.0f;
  switch (route) {
    case GemmRoute::stream:
      return stream_linear(A, M, lda, B, N, K, ldb, C, ldc, add);
    case GemmRoute::panels:
      return panel_matmul(A, M, lda, B, K, N, ldb, C, ldc, add);
    case GemmRoute::panels_tn:
      return panel_matmul_tn(A, lda, M, B, K, N, ldb, C, ldc, add);
    case GemmRoute::small:
      if (gemm_small_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
      break;
    case GemmRoute::cblas_per_thread:
      if (gemm_f32_cblas_per_thread(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
      break;
    case GemmRoute::provider:
      break;
  }
  gemm_f32_general(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

template <>
void gemm<float>(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                 float* C, int64_t ldc) {
  const ProductTiming timing;
  if (gemm_precision() == GemmPrecision::bf16 && M > 0 && N > 0 && K > 0) {
    check_args(ta, tb, M, N, K, lda, ldb, ldc);
    return gemm_f32_as_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  run_on_route(gemm_route(ta, tb, M, N, K, alpha, beta), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_f32_general(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                      int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_c(M, N, beta, C, ldc);
#ifdef MOEPP_GEMM_ONEDNN
  gemm_f32_onednn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
  gemm_f32_cblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

template <>
void gemm<double>(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha,
                  const double* A, int64_t lda, const double* B, int64_t ldb, double beta,
                  double* C, int64_t ldc) {
  check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_c(M, N, beta, C, ldc);
#ifdef MOEPP_HAVE_CBLAS
  cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), int(M), int(N), int(K), alpha, A,
              int(lda), B, int(ldb), beta, C, int(ldc));
#else
  gemm_loop(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

namespace {

// A share of one grouped problem that a thread runs alone: C's rows [m0, m0 + M) and
// columns [n0, n0 + N).
struct GroupedPiece {
  size_t problem;
  int64_t m0, M, n0, N;
  double work;  // M N K
};

constexpr int64_t kPiecesPerThread = 4;  // a thread's share of the work, in pieces
constexpr int64_t kPieceMultiple = 32;   // the rows the bf16 products pad to (mixed_precision.cpp)

// The pieces of a bf16 grouped product, largest first. Routing can give most of a batch to
// one or two experts (early in training the others get a few rows), and one problem a
// thread then leaves the other thread idle for most of the call. So a problem larger than
// a quarter of a thread's share is cut, in multiples of 32 so that the shapes oneDNN
// compiles stay few. Where A is not transposed the cut runs along M: each piece rounds only
// its own rows of A, and B is a weight (the shadow's copy). The weight gradients (TN) are
// cut along M or N, whichever makes every piece round the smaller operand again (B [K, N]
// or A [K, M]).
std::vector<GroupedPiece> grouped_pieces(Trans ta, const std::vector<GemmProblem<float>>& problems, int threads) {
  double total = 0;
  for (const auto& p : problems) total += double(p.M) * double(p.N) * double(p.K);
  const double target = total / double(std::max(threads, 1) * kPiecesPerThread);
  std::vector<GroupedPiece> pieces;
  for (size_t i = 0; i < problems.size(); ++i) {
    const auto& p = problems[i];
    const bool along_m = ta == Trans::N || p.M >= p.N;
    const int64_t extent = along_m ? p.M : p.N;
    if (extent == 0) continue;  // no element of C to write
    const double work = double(p.M) * double(p.N) * double(p.K);
    const int64_t most = std::max<int64_t>(1, extent / kPieceMultiple);
    const int64_t parts = target > 0 ? std::clamp<int64_t>(int64_t(std::ceil(work / target)), 1, most) : 1;
    const int64_t step = (extent + parts * kPieceMultiple - 1) / (parts * kPieceMultiple) * kPieceMultiple;
    for (int64_t s = 0; s < extent; s += step) {
      const int64_t len = std::min(step, extent - s);
      const double share = work * double(len) / double(extent);
      pieces.push_back(along_m ? GroupedPiece{i, s, len, 0, p.N, share} : GroupedPiece{i, 0, p.M, s, len, share});
    }
  }
  std::stable_sort(pieces.begin(), pieces.end(),
                   [](const GroupedPiece& a, const GroupedPiece& b) { return a.work > b.work; });
  return pieces;
}

}  // namespace

template <typename T>
void gemm_grouped(Trans ta, Trans tb, const std::vector<GemmProblem<T>>& problems) {
  const ProductTiming timing;
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_precision() == GemmPrecision::bf16) {
      // Pieces a thread, each on that thread alone (inside a parallel region oneDNN and the
      // rounding run serially): an expert's product of ~100 rows split over two threads
      // spends much of its time at their barriers. Largest first, taken as threads free up.
      // An error in a worker (an exception may not leave an OpenMP region) is rethrown here.
      const Bf16Shadow* shadow = gemm_shadow();
      const std::vector<GroupedPiece> pieces = grouped_pieces(ta, problems, max_threads());
      std::exception_ptr first_error;
      parallel_for_dynamic(int64_t(pieces.size()), [&](int64_t i) {
        try {
          const GemmPrecisionScope same(GemmPrecision::bf16, shadow);
          const GroupedPiece& q = pieces[size_t(i)];
          const auto& p = problems[q.problem];
          const float* A = p.A + (ta == Trans::N ? q.m0 * p.lda : q.m0);
          const float* B = p.B + (tb == Trans::N ? q.n0 : q.n0 * p.ldb);
          gemm<float>(ta, tb, q.M, q.N, p.K, 1.0f, A, p.lda, B, p.ldb, p.beta, p.C + q.m0 * p.ldc + q.n0, p.ldc);
        } catch (...) {
#pragma omp critical(moepp_gemm_grouped_error)
          if (!first_error) first_error = std::current_exception();
        }
      });
      if (first_error) std::rethrow_exception(first_error);
      return;
    }
  }
  for (const auto& p : problems) {
    if constexpr (std::is_same_v<T, float>) {
      run_on_route(gemm_grouped_route(ta, tb, p.M, p.N, p.K, p.ldb, p.beta), ta, tb, p.M, p.N, p.K, 1.0f, p.A, p.lda,
                   p.B, p.ldb, p.beta, p.C, p.ldc);
    } else {
      gemm<T>(ta, tb, p.M, p.N, p.K, T(1), p.A, p.lda, p.B, p.ldb, p.beta, p.C, p.ldc);
    }
  }
}

template void gemm_grouped<float>(Trans, Trans, const std::vector<GemmProblem<float>>&);
template void gemm_grouped<double>(Trans, Trans, const std::vector<GemmProblem<double>>&);

}  // namespace moepp
