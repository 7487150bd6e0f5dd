#include "kernels/attention.h"

#include "core/dtype.h"
#include "core/error.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {
const AttentionShape kShape{2, 6, 4, 2, 5};  // batch 2, seq 6, 4 q heads over 2 kv heads

Shape qshape() { return {kShape.batch, kShape.seq, kShape.q_heads, kShape.head_dim}; }
Shape kvshape() { return {kShape.batch, kShape.seq, kShape.kv_heads, kShape.head_dim}; }

// softmax(q k^T / sqrt(d) + causal mask) v per (batch, head), HF repeat_kv head mapping.
void naive_attention(const double* q, const double* k, const double* v, double* out) {
  const auto& s = kShape;
  const int64_t rep = s.q_heads / s.kv_heads;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h)
      for (int64_t i = 0; i < s.seq; ++i) {
        std::vector<double> sc(size_t(s.seq), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double d = 0;
          for (int64_t e = 0; e < s.head_dim; ++e)
            d += q[((b * s.seq + i) * s.q_heads + h) * s.head_dim + e] *
                 k[((b * s.seq + j) * s.kv_heads + h / rep) * s.head_dim + e];
          sc[size_t(j)] = d / std::sqrt(double(s.head_dim));
          mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(sc[size_t(j)] - mx);
        for (int64_t e = 0; e < s.head_dim; ++e) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j)
            acc += std::exp(sc[size_t(j)] - mx) / sum * v[((b * s.seq + j) * s.kv_heads + h / rep) * s.head_dim + e];
          out[((b * s.seq + i) * s.q_heads + h) * s.head_dim + e] = acc;
        }
      }
}
}  // namespace

TEST(Attention, CausalGroupedQueryForwardMatchesNaive) {
  Rng rng(1);
  auto q = random_tensor<double>(qshape(), rng), k = random_tensor<double>(kvshape(), rng);
  auto v = random_tensor<double>(kvshape(), rng);
  Tensor<double> out(qshape()), want(qshape());
  Tensor<double> probs({kShape.batch, kShape.q_heads, kShape.seq, kShape.seq});
  attention_forward(q.data(), k.data(), v.data(), out.data(), probs.data(), kShape);
  naive_attention(q.data(), k.data(), v.data(), want.data());
  EXPECT_LT(rel_error(out, want), 1e-13);
}

TEST(Attention, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  auto q = random_tensor<double>(qshape(), rng), k = random_tensor<double>(kvshape(), rng);
  auto v = random_tensor<double>(kvshape(), rng), dout = random_tensor<double>(qshape(), rng);
  Tensor<double> out(qshape()), probs({kShape.batch, kShape.q_heads, kShape.seq, kShape.seq});
  auto loss = [&] {
    attention_forward(q.data(), k.data(), v.data(), out.data(), probs.data(), kShape);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i) l += dout[i] * out[i];
    return l;
  };
  loss();
  Tensor<double> dq(qshape()), dk(kvshape()), dv(kvshape());
  attention_backward(q.data(), k.data(), v.data(), probs.data(), dout.data(), dq.data(), dk.data(), dv.data(), kShape);
  expect_fd_gradient("attention dq", q.data(), dq.data(), q.numel(), loss);
  expect_fd_gradient("attention dk", k.data(), dk.data(), k.numel(), loss);
  expect_fd_gradient("attention dv", v.data(), dv.data(), v.numel(), loss);

  auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v), df = cast<float>(dout);
  Tensor<float> of(qshape()), pf(probs.shape()), dqf(qshape()), dkf(kvshape()), dvf(kvshape());
  attention_forward(qf.data(), kf.data(), vf.data(), of.data(), pf.data(), kShape);
  attention_backward(qf.data(), kf.data(), vf.data(), pf.data(), df.data(), dqf.data(), dkf.data(), dvf.data(), kShape);
  loss();
  EXPECT_LT(rel_error(of, out), 1e-5);
  EXPECT_LT(rel_error(dqf, dq), 1e-4);
  EXPECT_LT(rel_error(dkf, dk), 1e-4);
  EXPECT_LT(rel_error(dvf, dv), 1e-4);
}

TEST(Attention, HeadsThatDoNotGroupAreAnError) {
  Tensor<float> x({1, 1, 3, 2}), p({1, 3, 1, 1});
  EXPECT_THROW(attention_forward(x.data(), x.data(), x.data(), x.data(), p.data(), AttentionShape{1, 1, 3, 2, 2}), Error);
}

namespace {

// With bf16: the histories are stored as bf16 bits (a KV cache under --kv-dtype bf16) and the
// reference reads the same rounded values.
void check_rows_against_naive(bool use_bf16, int64_t hd) {
  const int64_t Hq = 8, Hkv = 2, kvD = Hkv * hd;
  const std::vector<int64_t> context = {1, 17, 40, 33};
  const int64_t rows = int64_t(context.size());
  Rng rng(7);
  std::vector<Tensor<float>> k_hist, v_hist;
  for (int64_t L : context) {
    k_hist.push_back(random_tensor<float>({L + 3, kvD}, rng));  // room past the context: must not be read
    v_hist.push_back(random_tensor<float>({L + 3, kvD}, rng));
  }
  auto q = random_tensor<float>({rows, Hq, hd}, rng);
  std::vector<const float*> keys, values;
  std::vector<std::vector<uint16_t>> k16(static_cast<size_t>(rows)), v16(static_cast<size_t>(rows));
  std::vector<const uint16_t*> keys16, values16;
  for (int64_t r = 0; r < rows; ++r) {
    keys.push_back(k_hist[size_t(r)].data());
    values.push_back(v_hist[size_t(r)].data());
    // Positions past the context are poison: reading one would show in the output.
    for (int64_t j = context[size_t(r)]; j < context[size_t(r)] + 3; ++j)
      for (int64_t e = 0; e < kvD; ++e) k_hist[size_t(r)][j * kvD + e] = v_hist[size_t(r)][j * kvD + e] = 1e6f;
    if (use_bf16) {
      for (auto* t : {&k_hist[size_t(r)], &v_hist[size_t(r)]}) {
        auto& bits = t == &k_hist[size_t(r)] ? k16[size_t(r)] : v16[size_t(r)];
        for (int64_t i = 0; i < t->numel(); ++i) {
          bits.push_back(f32_to_bf16((*t)[i]).bits);
          (*t)[i] = bf16_to_f32(bf16{bits.back()});  // what the reference reads
        }
      }
      keys16.push_back(k16[size_t(r)].data());
      values16.push_back(v16[size_t(r)].data());
    }
  }
  AttentionRows<float> a{.rows = rows, .q_heads = Hq, .kv_heads = Hkv, .head_dim = hd, .keys = keys.data(),
                         .values = values.data(), .context = context.data(), .kv_stride = kvD};
  if (use_bf16) {
    a.keys = a.values = nullptr;  // the bf16 histories alone
    a.keys_bf16 = keys16.data();
    a.values_bf16 = values16.data();
  }
  Tensor<float> out({rows, Hq, hd});
  attention_rows_forward(q.data(), a, out.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv), L = context[size_t(r)];
      std::vector<double> s(static_cast<size_t>(L));
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < L; ++j) {
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += double(q[(r * Hq + h) * hd + e]) * k_hist[size_t(r)][j * kvD + g * hd + e];
        s[size_t(j)] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[size_t(j)]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int64_t e = 0; e < hd; ++e) {
        double want = 0;
        for (int64_t j = 0; j < L; ++j) want += s[size_t(j)] / sum * v_hist[size_t(r)][j * kvD + g * hd + e];
        EXPECT_NEAR(out[(r * Hq + h) * hd + e], want, 2e-5)
            << (use_bf16 ? "bf16 " : "f32 ") << "hd " << hd << " row " << r << " head " << h << " dim " << e;
      }
    }
}

}  // namespace

// Decode rows against per-sequence histories of different lengths (the KV-cache form):
// each row's output is the naive double attention of its query over its own history's
// first context[r] positions. Histories long enough that the vectorised exp runs whole
// 16-wide chunks and a ragged tail.
TEST(Attention, RowsAgainstTheirOwnHistoriesMatchNaive) { check_rows_against_naive(false, 16); }

// The same with the histories held as bf16 (KvDtype::bf16), head sizes with and without a
// ragged 16-lane tail: against double attention over the same rounded keys and values.
TEST(Attention, RowsAgainstBf16HistoriesMatchNaiveOverTheRoundedValues) {
  check_rows_against_naive(true, 16);
  check_rows_against_naive(true, 20);
}
