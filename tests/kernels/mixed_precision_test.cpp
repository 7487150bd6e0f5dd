// bf16 mixed-precision products (kernels/mixed_precision.h) against a double triple loop
// over the same operands rounded to bf16: every transpose, alpha and beta, strided
// operands, operands read from a Bf16Shadow at an offset or rounded once for several
// products (Bf16OperandScope), the experts' grouped products, and f32 scopes that pin a region to f32 inside a bf16 one.
#include "kernels/mixed_precision.h"

#include <gtest/gtest.h>

#include <tuple>

#include "core/dtype.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

#define SKIP_WITHOUT_BF16() \
  if (!gemm_bf16_available()) GTEST_SKIP() << "no native bf16 products on this CPU or build"

double round_bf16(float v) { return double(bf16_to_f32(f32_to_bf16(v))); }

// A [rows, cols] f32 matrix stored with row stride ld >= cols (the gap holds NaN, which a
// product that reads past a row would spread into its result).
struct Strided {
  int64_t rows, cols, ld;
  std::vector<float> v;
  Strided(int64_t r, int64_t c, int64_t pad, Rng& rng) : rows(r), cols(c), ld(c + pad), v(size_t(r * (c + pad)), NAN) {
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) v[size_t(i * ld + j)] = float(rng.normal());
  }
  double rounded(int64_t i, int64_t j) const { return round_bf16(v[size_t(i * ld + j)]); }
};

// alpha op(A) op(B) + beta C0 in double over bf16-rounded A and B.
std::vector<double> expected(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const Strided& A,
                             const Strided& B, double beta, const std::vector<float>& C0) {
  std::vector<double> want(size_t(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += (ta ? A.rounded(k, i) : A.rounded(i, k)) * (tb ? B.rounded(j, k) : B.rounded(k, j));
      want[size_t(i * N + j)] = alpha * s + (beta != 0 ? beta * double(C0[size_t(i * N + j)]) : 0.0);
    }
  return want;
}

double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST(MixedPrecision, ProductsEqualDoubleOverRoundedOperands) {
  SKIP_WITHOUT_BF16();
  Rng rng(3);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [M, N, K] : {std::tuple{1, 1, 1}, {7, 5, 3}, {33, 65, 17}, {130, 96, 200}, {301, 160, 40}})
        for (int64_t pad : {0, 3}) {
          const Strided A = ta ? Strided(K, M, pad, rng) : Strided(M, K, pad, rng);
          const Strided B = tb ? Strided(N, K, pad, rng) : Strided(K, N, pad, rng);
          std::vector<float> C0(size_t(M * N));
          for (auto& c : C0) c = float(rng.normal());
          for (auto [alpha, beta] : {std::pair{1.0f, 0.0f}, {1.0f, 1.0f}, {0.75f, -0.5f}}) {
            std::vector<float> C = C0;
            {
              const GemmPrecisionScope bf16(GemmPrecision::bf16);
              gemm<float>(ta ? Trans::T : Trans::N, tb ? Trans::T : Trans::N, M, N, K, alpha, A.v.data(), A.ld,
                          B.v.data(), B.ld, beta, C.data(), N);
            }
            // f32 accumulation of exact bf16 products: the only error is the f32 sums'.
            EXPECT_LT(rel_err(C, expected(ta, tb, M, N, K, alpha, A, B, beta, C0)), 1e-6)
                << "ta=" << ta << " tb=" << tb << " " << M << "x" << N << "x" << K << " pad " << pad << " alpha "
                << alpha << " beta " << beta;
          }
        }
}

TEST(MixedPrecision, RoundingIsRealAndF32ScopesPinTheirRegion) {
  SKIP_WITHOUT_BF16();
  Rng rng(5);
  const int64_t M = 16, N = 24, K = 64;
  const Strided A(M, K, 0, rng), B(N, K, 0, rng);
  auto product = [&](GemmPrecision outer, bool pin_f32) {
    std::vector<float> C(size_t(M * N));
    const GemmPrecisionScope scope(outer);
    if (pin_f32) {
      const GemmPrecisionScope f32(GemmPrecision::f32);
      EXPECT_EQ(gemm_precision(), GemmPrecision::f32);
      gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, A.v.data(), K, B.v.data(), K, 0.0f, C.data(), N);
    } else {
      gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, A.v.data(), K, B.v.data(), K, 0.0f, C.data(), N);
    }
    EXPECT_EQ(gemm_precision(), outer);
    return C;
  };
  const auto f32 = product(GemmPrecision::f32, false);
  const auto bf16 = product(GemmPrecision::bf16, false);
  const auto pinned = product(GemmPrecision::bf16, true);
  EXPECT_EQ(pinned, f32);
  // Rounding both operands to 8 significant bits moves a 64-term sum by about 2^-9 relative.
  std::vector<double> exact(f32.begin(), f32.end());
  const double e = rel_err(bf16, exact);
  EXPECT_GT(e, 5e-4);
  EXPECT_LT(e, 1e-2);
  EXPECT_EQ(gemm_precision(), GemmPrecision::f32);
}

TEST(MixedPrecision, ShadowedOperandsAreReadFromTheShadowAtTheirOffset) {
  SKIP_WITHOUT_BF16();
  Rng rng(7);
  // A weight tensor [2 experts, N, K]; the product reads expert 1's rows.
  const int64_t M = 9, N = 20, K = 48;
  const Strided W(2 * N, K, 0, rng), X(M, K, 0, rng);
  Bf16Shadow shadow;
  shadow.refresh({{W.v.data(), int64_t(W.v.size())}});
  ASSERT_EQ(shadow.elements(), 2 * N * K);
  const float* w1 = W.v.data() + N * K;
  ASSERT_NE(shadow.find(w1, N * K), nullptr);
  EXPECT_EQ(shadow.find(w1, N * K + 1), nullptr);  // past the tensor's end
  EXPECT_EQ(shadow.find(X.v.data(), 1), nullptr);
  EXPECT_EQ(shadow.find(w1, N * K)[5], f32_to_bf16(w1[5]).bits);

  std::vector<float> C(size_t(M * N)), C_stale(size_t(M * N));
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16, &shadow);
    gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, X.v.data(), K, w1, K, 0.0f, C.data(), N);
  }
  Strided W1(N, K, 0, rng);
  std::copy(w1, w1 + N * K, W1.v.begin());
  EXPECT_LT(rel_err(C, expected(false, true, M, N, K, 1.0, X, W1, 0.0, C)), 1e-6);
  // Weights changed after the refresh are not seen until the next refresh: the contract the
  // trainer keeps by refreshing at every step.
  std::vector<float> Wv = W.v;
  Bf16Shadow s2;
  s2.refresh({{Wv.data(), int64_t(Wv.size())}});
  for (int64_t i = N * K; i < 2 * N * K; ++i) Wv[size_t(i)] = 0;
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16, &s2);
    gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, X.v.data(), K, Wv.data() + N * K, K, 0.0f, C_stale.data(), N);
  }
  EXPECT_EQ(C_stale, C);
  s2.refresh({{Wv.data(), int64_t(Wv.size())}});
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16, &s2);
    gemm<float>(Trans::N, Trans::T, M, N, K, 1.0f, X.v.data(), K, Wv.data() + N * K, K, 0.0f, C_stale.data(), N);
  }
  for (float c : C_stale) EXPECT_EQ(c, 0.0f);
}

TEST(MixedPrecision, OperandsRoundedOnceAreReadFromTheirCopy) {
  SKIP_WITHOUT_BF16();
  Rng rng(9);
  const int64_t M = 37, N = 24, K = 50;
  for (bool ta : {false, true}) {
    Strided X = ta ? Strided(K, M, 3, rng) : Strided(M, K, 3, rng);
    const Strided W(N, K, 0, rng);
    const Strided X0 = X;
    const Trans t = ta ? Trans::T : Trans::N;
    auto product = [&] {
      std::vector<float> C(size_t(M * N));
      gemm<float>(t, Trans::T, M, N, K, 1.0f, X.v.data(), X.ld, W.v.data(), K, 0.0f, C.data(), N);
      return C;
    };
    const GemmPrecisionScope bf16(GemmPrecision::bf16);
    const auto before = product();
    EXPECT_LT(rel_err(before, expected(ta, true, M, N, K, 1.0, X, W, 0.0, before)), 1e-6) << "ta=" << ta;
    {
      const Bf16OperandScope once(X.v.data(), int64_t(X.v.size()));
      // Changing X breaks the scope's contract on purpose: the products still see the
      // values rounded when it began, which shows they read its copy.
      for (int64_t j = 0; j < X.cols; ++j) X.v[size_t(j)] += 1.0f;
      const auto in_scope = product();
      EXPECT_LT(rel_err(in_scope, expected(ta, true, M, N, K, 1.0, X0, W, 0.0, in_scope)), 1e-6) << "ta=" << ta;
      {
        // An operand reaching past a scope's span is rounded by its product, as is any
        // operand outside every scope.
        const Bf16OperandScope part(W.v.data(), N * K - 1);
        std::vector<float> C(size_t(M * N));
        gemm<float>(t, Trans::T, M, N, K, 1.0f, X.v.data(), X.ld, W.v.data(), K, 0.0f, C.data(), N);
        EXPECT_LT(rel_err(C, expected(ta, true, M, N, K, 1.0, X0, W, 0.0, C)), 1e-6);
      }
      EXPECT_EQ(product(), in_scope);  // the inner scope's end leaves the outer one's copy
    }
    const auto after = product();
    EXPECT_LT(rel_err(after, expected(ta, true, M, N, K, 1.0, X, W, 0.0, after)), 1e-6) << "ta=" << ta;
    EXPECT_GT(rel_err(after, expected(ta, true, M, N, K, 1.0, X0, W, 0.0, after)), 1e-3);
  }
  // Under f32 products a scope rounds nothing: the product stays exact f32.
  const Strided A(8, 16, 0, rng), B(16, 8, 0, rng);
  std::vector<float> plain(64), scoped(64);
  gemm<float>(Trans::N, Trans::N, 8, 8, 16, 1.0f, A.v.data(), 16, B.v.data(), 8, 0.0f, plain.data(), 8);
  {
    const Bf16OperandScope once(A.v.data(), int64_t(A.v.size()));
    gemm<float>(Trans::N, Trans::N, 8, 8, 16, 1.0f, A.v.data(), 16, B.v.data(), 8, 0.0f, scoped.data(), 8);
  }
  EXPECT_EQ(scoped, plain);
}

TEST(MixedPrecision, GroupedProductsEqualEachAlone) {
  SKIP_WITHOUT_BF16();
  Rng rng(11);
  const int64_t N = 32, K = 40;
  const Strided W(3 * N, K, 0, rng);
  const int64_t rows[3] = {5, 0, 17};
  std::vector<Strided> xs;
  for (int e = 0; e < 3; ++e) xs.emplace_back(std::max<int64_t>(rows[e], 1), K, 0, rng);
  std::vector<std::vector<float>> C(3);
  std::vector<GemmProblem<float>> problems;
  for (int e = 0; e < 3; ++e) {
    C[size_t(e)].assign(size_t(std::max<int64_t>(rows[e], 1) * N), 1.0f);
    problems.push_back({rows[e], N, K, xs[size_t(e)].v.data(), K, W.v.data() + e * N * K, K, C[size_t(e)].data(), N, 1.0f});
  }
  Bf16Shadow shadow;
  shadow.refresh({{W.v.data(), int64_t(W.v.size())}});
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16, &shadow);
    gemm_grouped<float>(Trans::N, Trans::T, problems);
  }
  for (int e : {0, 2}) {
    Strided We(N, K, 0, rng);
    std::copy(W.v.begin() + e * N * K, W.v.begin() + (e + 1) * N * K, We.v.begin());
    const std::vector<float> ones(size_t(rows[e] * N), 1.0f);
    EXPECT_LT(rel_err(C[size_t(e)], expected(false, true, rows[e], N, K, 1.0, xs[size_t(e)], We, 1.0, ones)), 1e-6)
        << "expert " << e;
  }
  EXPECT_EQ(C[1][0], 1.0f);  // no rows: C untouched
}

// Routing can give one expert most of a batch; the threads then share that expert's product
// in pieces of 32-row multiples: along M for the forward and input-gradient products
// (NT, NN), along M or N for the weight gradients (TN). Here one problem holds 400 of ~470
// rows, so it is cut. Every piece must land in its own block of the strided C, and the gaps
// between C's rows stay as they were.
TEST(MixedPrecision, GroupedProductsCutIntoPiecesEqualDouble) {
  SKIP_WITHOUT_BF16();
  Rng rng(17);
  const int64_t rows[4] = {3, 400, 0, 70};
  struct Kind {
    bool ta, tb;
    int64_t M, N, K;  // the problem's sizes with r rows routed: -1 marks the dimension that is r
  };
  // Forward X W^T; input gradient dY W; weight gradients dY^T X with M > N and with N > M.
  for (const Kind kind : {Kind{false, true, -1, 96, 64}, Kind{false, false, -1, 64, 96}, Kind{true, false, 96, 64, -1},
                          Kind{true, false, 64, 96, -1}})
    for (float beta : {0.0f, 1.0f}) {
      std::vector<Strided> as, bs;
      std::vector<std::vector<float>> C0, C;
      std::vector<GemmProblem<float>> problems;
      std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes;
      const int64_t ldc_pad = 5;
      for (int e = 0; e < 4; ++e) {
        const int64_t r = rows[e];
        const int64_t M = kind.M < 0 ? r : kind.M, N = kind.N, K = kind.K < 0 ? r : kind.K;
        as.push_back(kind.ta ? Strided(K, M, 3, rng) : Strided(M, K, 3, rng));
        bs.push_back(kind.tb ? Strided(N, K, 2, rng) : Strided(K, N, 2, rng));
        std::vector<float> c(size_t(M * (N + ldc_pad)));
        for (auto& v : c) v = float(rng.normal());
        C0.push_back(c);
        C.push_back(c);
        shapes.emplace_back(M, N, K);
      }
      for (int e = 0; e < 4; ++e) {
        const auto [M, N, K] = shapes[size_t(e)];
        problems.push_back({M, N, K, as[size_t(e)].v.data(), as[size_t(e)].ld, bs[size_t(e)].v.data(),
                            bs[size_t(e)].ld, C[size_t(e)].data(), N + ldc_pad, beta});
      }
      {
        const GemmPrecisionScope bf16(GemmPrecision::bf16);
        gemm_grouped<float>(kind.ta ? Trans::T : Trans::N, kind.tb ? Trans::T : Trans::N, problems);
      }
      for (int e = 0; e < 4; ++e) {
        const auto [M, N, K] = shapes[size_t(e)];
        if (M == 0) continue;
        std::vector<float> got(size_t(M * N)), before(size_t(M * N));
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N + ldc_pad; ++j) {
            const size_t at = size_t(i * (N + ldc_pad) + j);
            if (j < N) {
              got[size_t(i * N + j)] = C[size_t(e)][at];
              before[size_t(i * N + j)] = C0[size_t(e)][at];
            } else {
              ASSERT_EQ(C[size_t(e)][at], C0[size_t(e)][at]) << "a gap of C changed: expert " << e << " row " << i;
            }
          }
        if (K == 0) {  // no rows routed to a weight gradient: C becomes beta C
          for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], beta * before[i]) << "expert " << e;
          continue;
        }
        EXPECT_LT(rel_err(got, expected(kind.ta, kind.tb, M, N, K, 1.0, as[size_t(e)], bs[size_t(e)], beta, before)),
                  1e-6)
            << "ta=" << kind.ta << " tb=" << kind.tb << " expert " << e << " (" << M << "x" << N << "x" << K
            << ") beta " << beta;
      }
    }
}

// The experts of a bf16 grouped product run on the OpenMP threads; an error in one of
// them (here a row stride shorter than a row) reaches the caller as the usual exception.
TEST(MixedPrecision, GroupedProductsReportAWorkersError) {
  SKIP_WITHOUT_BF16();
  const int64_t M = 20, N = 32, K = 40;
  std::vector<float> x(size_t(M * K), 1.0f), w(size_t(N * K), 1.0f);
  std::vector<std::vector<float>> C(4, std::vector<float>(size_t(M * N), 0.0f));
  std::vector<GemmProblem<float>> problems;
  for (int e = 0; e < 4; ++e)
    problems.push_back({M, N, K, x.data(), e == 2 ? K - 1 : K, w.data(), K, C[size_t(e)].data(), N, 0.0f});
  const GemmPrecisionScope bf16(GemmPrecision::bf16);
  try {
    gemm_grouped<float>(Trans::N, Trans::T, problems);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lda=39 too small"), std::string::npos) << e.what();
  }
  EXPECT_EQ(C[0][0], float(K));  // the valid products ran: 40 ones times ones
}

TEST(MixedPrecision, ScopeRefusesBf16WhereTheCpuHasNone) {
  if (gemm_bf16_available()) GTEST_SKIP() << "this CPU has native bf16 products";
  EXPECT_THROW({ const GemmPrecisionScope s(GemmPrecision::bf16); }, Error);
}
