// Training attention in a bf16 scope (kernels/attention_bf16.h) against a double
// implementation over the operands the kernels round: v and dO to bf16 (q and k too, where
// they enter the backward's products; the forward's scores are f32). The
// kernels also round what the double one keeps exact, the probabilities (for P V and
// P^T dO) and dS (for dS K and dS^T Q); rounding moves each by at most 2^-9 of itself, so
// an element of a result may move by 2^-9 of the sum of the magnitudes it adds. The bounds
// below allow 2^-8 of that sum, plus f32 summation slack: a wrong layout or a product
// rounded twice would miss them by orders of magnitude.
#include "kernels/attention_bf16.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "kernels/attention.h"
#include "kernels/mixed_precision.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

double r16(float x) { return double(bf16_to_f32(f32_to_bf16(x))); }
constexpr double kRounding = 1.0 / 256;  // 2^-8: twice an operand's largest relative rounding

struct Case {
  AttentionShape s;
  Shape q() const { return {s.batch, s.seq, s.q_heads, s.head_dim}; }
  Shape kv() const { return {s.batch, s.seq, s.kv_heads, s.head_dim}; }
  int64_t qi(int64_t b, int64_t i, int64_t h) const { return ((b * s.seq + i) * s.q_heads + h) * s.head_dim; }
  int64_t ki(int64_t b, int64_t j, int64_t h) const {
    return ((b * s.seq + j) * s.kv_heads + h / (s.q_heads / s.kv_heads)) * s.head_dim;
  }
};

void check_case(const Case& c, uint64_t seed) {
  const AttentionShape& s = c.s;
  const int64_t T = s.seq, hd = s.head_dim;
  SCOPED_TRACE(::testing::Message() << "batch " << s.batch << " seq " << T << " heads " << s.q_heads << "/"
                                    << s.kv_heads << " head_dim " << hd);
  Rng rng(seed);
  auto q = random_tensor<float>(c.q(), rng), k = random_tensor<float>(c.kv(), rng);
  auto v = random_tensor<float>(c.kv(), rng), dout = random_tensor<float>(c.q(), rng);
  Tensor<float> out(c.q()), stats({softmax_stats_size(s)});
  std::fill(stats.data(), stats.data() + stats.numel(), NAN);  // the forward writes every one
  Tensor<float> dq(c.q()), dk(c.kv()), dv(c.kv());
  constexpr float kBase = 0.5f;  // the backward adds into its outputs
  for (auto* t : {&dq, &dk, &dv}) std::fill(t->data(), t->data() + t->numel(), kBase);
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16);
    attention_forward(q.data(), k.data(), v.data(), out.data(), stats.data(), s);
    attention_backward(q.data(), k.data(), v.data(), stats.data(), dout.data(), dq.data(), dk.data(), dv.data(), s);
  }
  const float scale = 1.0f / std::sqrt(float(hd));
  std::vector<double> want_dk(size_t(k.numel()), 0.0), want_dv(size_t(v.numel()), 0.0);
  std::vector<double> bound_dk(size_t(k.numel()), 0.0), bound_dv(size_t(v.numel()), 0.0);
  int64_t checked = 0;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h)
      for (int64_t i = 0; i < T; ++i) {
        // Forward: softmax over (q * scale) . k_j, then sum_j P_j bf16(v_j).
        std::vector<double> p(size_t(i + 1));
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += double(q[c.qi(b, i, h) + e] * scale) * double(k[c.ki(b, j, h) + e]);
          p[size_t(j)] = d;
          mx = std::max(mx, d);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (auto& x : p) x /= sum;
        // The softmax stats, f32 sums of f32 products of the same q * scale and k.
        const std::string at = std::to_string(b) + "," + std::to_string(h) + "," + std::to_string(i);
        EXPECT_NEAR(softmax_max(stats.data(), b, h, s)[i], mx, 1e-5 * (1 + std::abs(mx))) << "max " << at;
        EXPECT_NEAR(softmax_inverse(stats.data(), b, h, s)[i], 1 / sum, 1e-5 / sum) << "inverse " << at;
        const std::vector<double>& prow = p;
        for (int64_t e = 0; e < hd; ++e) {
          double want = 0, mag = 0;
          for (int64_t j = 0; j <= i; ++j) {
            want += p[size_t(j)] * r16(v[c.ki(b, j, h) + e]);
            mag += p[size_t(j)] * std::abs(r16(v[c.ki(b, j, h) + e]));
          }
          EXPECT_NEAR(out[c.qi(b, i, h) + e], want, kRounding * mag + 1e-5 * mag + 1e-6) << "out";
        }
        // Backward from the probabilities P (the kernels recompute them): dP_j = bf16(dO) . bf16(v_j),
        // dS_j = P_j (dP_j - sum P dP) scale; dq += sum_j dS_j bf16(k_j), dk_j += dS_j bf16(q),
        // dv_j += P_j bf16(dO).
        std::vector<double> dP(size_t(i + 1)), dS(size_t(i + 1)), dSmag(size_t(i + 1));
        double rowdot = 0, rowmag = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0, m = 0;
          for (int64_t e = 0; e < hd; ++e) {
            const double x = r16(dout[c.qi(b, i, h) + e]) * r16(v[c.ki(b, j, h) + e]);
            d += x;
            m += std::abs(x);
          }
          dP[size_t(j)] = d;
          rowdot += prow[size_t(j)] * d;
          rowmag += prow[size_t(j)] * m;
          dSmag[size_t(j)] = m;
        }
        for (int64_t j = 0; j <= i; ++j) {
          dS[size_t(j)] = prow[size_t(j)] * (dP[size_t(j)] - rowdot) * scale;
          // What f32 sums may move dS by: ~1e-6 of the magnitudes dP and the row's dot add
          // (and the recomputed P's own ~1e-6).
          dSmag[size_t(j)] = prow[size_t(j)] * (dSmag[size_t(j)] + rowmag) * scale;
        }
        for (int64_t e = 0; e < hd; ++e) {
          double want = 0, mag = 0, slack = 0;
          for (int64_t j = 0; j <= i; ++j) {
            const double kj = r16(k[c.ki(b, j, h) + e]);
            want += dS[size_t(j)] * kj;
            mag += std::abs(dS[size_t(j)] * kj);
            slack += dSmag[size_t(j)] * std::abs(kj);
          }
          EXPECT_NEAR(dq[c.qi(b, i, h) + e], kBase + want, kRounding * mag + 1e-4 * slack + 1e-6) << "dq";
          const double qe = r16(q[c.qi(b, i, h) + e]), oe = r16(dout[c.qi(b, i, h) + e]);
          for (int64_t j = 0; j <= i; ++j) {
            const size_t at = size_t(c.ki(b, j, h) + e);
            want_dk[at] += dS[size_t(j)] * qe;
            bound_dk[at] += kRounding * std::abs(dS[size_t(j)] * qe) + 1e-4 * dSmag[size_t(j)] * std::abs(qe);
            want_dv[at] += prow[size_t(j)] * oe;
            bound_dv[at] += (kRounding + 1e-5) * prow[size_t(j)] * std::abs(oe);
          }
        }
        ++checked;
      }
  for (int64_t x = 0; x < k.numel(); ++x) {
    EXPECT_NEAR(dk[x], kBase + want_dk[size_t(x)], bound_dk[size_t(x)] + 1e-6) << "dk " << x;
    EXPECT_NEAR(dv[x], kBase + want_dv[size_t(x)], bound_dv[size_t(x)] + 1e-6) << "dv " << x;
  }
  EXPECT_EQ(checked, s.batch * s.q_heads * T);

  // The products were rounded: the f32 kernels (no scope) give another output.
  Tensor<float> out32(c.q()), stats32(stats.shape());
  attention_forward(q.data(), k.data(), v.data(), out32.data(), stats32.data(), s);
  EXPECT_GT(rel_error(out, out32), 1e-5) << "the bf16 scope left attention in f32";
  EXPECT_LT(rel_error(out, out32), 3e-2);
}

bool skip() { return !gemm_bf16_available() || !attention_bf16_available(2); }

}  // namespace

// Grouped heads, an odd length (a last pair of keys with one key), two 16-query tiles and
// two runs of 32 rows.
TEST(AttentionBf16, GroupedHeadsMatchDoubleOverRoundedOperands) {
  if (skip()) GTEST_SKIP() << "no AVX-512 BF16 in this build or CPU";
  check_case({{2, 37, 4, 2, 32}}, 11);
}

// One query head per kv head (runs of 64 rows), more keys than a run, head width 64.
TEST(AttentionBf16, LongSequenceWideHeadsMatchDoubleOverRoundedOperands) {
  if (skip()) GTEST_SKIP() << "no AVX-512 BF16 in this build or CPU";
  check_case({{1, 150, 2, 2, 64}}, 12);
}

// A head width that is not a whole vector (10) and 3 query heads a group: 21 rows x 3
// heads leave padding queries in the last vector.
TEST(AttentionBf16, RaggedHeadsAndPaddedQueriesMatchDoubleOverRoundedOperands) {
  if (skip()) GTEST_SKIP() << "no AVX-512 BF16 in this build or CPU";
  check_case({{1, 45, 6, 2, 10}}, 13);
}

// Odd head widths have no bf16 pairs: attention stays in f32 inside the scope.
TEST(AttentionBf16, OddHeadWidthsStayF32) {
  EXPECT_FALSE(attention_bf16_available(5));
  if (skip()) GTEST_SKIP() << "no AVX-512 BF16 in this build or CPU";
  const AttentionShape s{1, 9, 2, 1, 5};
  Rng rng(14);
  auto q = random_tensor<float>({1, 9, 2, 5}, rng), k = random_tensor<float>({1, 9, 1, 5}, rng);
  auto v = random_tensor<float>({1, 9, 1, 5}, rng);
  Tensor<float> a({1, 9, 2, 5}), b({1, 9, 2, 5}), pa({1, 2, 9, 9}), pb({1, 2, 9, 9});
  attention_forward(q.data(), k.data(), v.data(), a.data(), pa.data(), s);
  {
    const GemmPrecisionScope bf16(GemmPrecision::bf16);
    attention_forward(q.data(), k.data(), v.data(), b.data(), pb.data(), s);
  }
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a[i], b[i]);
}
