#include "kernels/attention.h"

#include <cmath>

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
// Also the softmax stats (kernels/attention.h): each row's largest score and 1 / its sum.
void naive_attention(const double* q, const double* k, const double* v, double* out, double* stats) {
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
        softmax_max(stats, b, h, s)[i] = mx;
        softmax_inverse(stats, b, h, s)[i] = 1 / sum;
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
  Tensor<double> stats({softmax_stats_size(kShape)}), want_stats(stats.shape());
  attention_forward(q.data(), k.data(), v.data(), out.data(), stats.data(), kShape);
  naive_attention(q.data(), k.data(), v.data(), want.data(), want_stats.data());
  EXPECT_LT(rel_error(out, want), 1e-13);
  EXPECT_LT(rel_error(stats, want_stats), 1e-13);
}

TEST(Attention, BackwardMatchesFiniteDifferencesAndF32MatchesF64) {
  Rng rng(2);
  auto q = random_tensor<double>(qshape(), rng), k = random_tensor<double>(kvshape(), rng);
  auto v = random_tensor<double>(kvshape(), rng), dout = random_tensor<double>(qshape(), rng);
  Tensor<double> out(qshape()), stats({softmax_stats_size(kShape)});
  auto loss = [&] {
    attention_forward(q.data(), k.data(), v.data(), out.data(), stats.data(), kShape);
    double l = 0;
    for (int64_t i = 0; i < out.numel(); ++i) l += dout[i] * out[i];
    return l;
  };
  loss();
  Tensor<double> dq(qshape()), dk(kvshape()), dv(kvshape());
  attention_backward(q.data(), k.data(), v.data(), stats.data(), dout.data(), dq.data(), dk.data(), dv.data(), kShape);
  expect_fd_gradient("attention dq", q.data(), dq.data(), q.numel(), loss);
  expect_fd_gradient("attention dk", k.data(), dk.data(), k.numel(), loss);
  expect_fd_gradient("attention dv", v.data(), dv.data(), v.numel(), loss);

  auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v), df = cast<float>(dout);
  Tensor<float> of(qshape()), sf(stats.shape()), dqf(qshape()), dkf(kvshape()), dvf(kvshape());
  attention_forward(qf.data(), kf.data(), vf.data(), of.data(), sf.data(), kShape);
  attention_backward(qf.data(), kf.data(), vf.data(), sf.data(), df.data(), dqf.data(), dkf.data(), dvf.data(), kShape);
  loss();
  EXPECT_LT(rel_error(of, out), 1e-5);
  EXPECT_LT(rel_error(dqf, dq), 1e-4);
  EXPECT_LT(rel_error(dkf, dk), 1e-4);
  EXPECT_LT(rel_error(dvf, dv), 1e-4);
}

// Training batches long enough that a sequence's keys span two blocks of 128 and its rows
// several runs: the f32 forward (runs in tiles on AVX-512) against the f64 forward (row by
// row), outputs and softmax stats, every one of which is written (the buffers start NaN);
// and the f32 backward (tiles of 16 queries, a partial last one, on AVX-512), which
// recomputes the probabilities from the stats, against the f64 backward.
TEST(Attention, LongSequencesInTilesMatchTheF64RowPath) {
  for (const AttentionShape& s : {AttentionShape{1, 150, 4, 2, 16}, AttentionShape{2, 140, 2, 2, 20}}) {
    Rng rng(4);
    const Shape qs{s.batch, s.seq, s.q_heads, s.head_dim}, kvs{s.batch, s.seq, s.kv_heads, s.head_dim};
    auto q = random_tensor<double>(qs, rng), k = random_tensor<double>(kvs, rng), v = random_tensor<double>(kvs, rng);
    Tensor<double> out(qs), stats({softmax_stats_size(s)});
    for (int64_t i = 0; i < stats.numel(); ++i) stats[i] = NAN;
    attention_forward(q.data(), k.data(), v.data(), out.data(), stats.data(), s);
    auto qf = cast<float>(q), kf = cast<float>(k), vf = cast<float>(v);
    Tensor<float> of(qs), sf(stats.shape());
    for (int64_t i = 0; i < sf.numel(); ++i) sf[i] = NAN;
    attention_forward(qf.data(), kf.data(), vf.data(), of.data(), sf.data(), s);
    EXPECT_LT(rel_error(of, out), 1e-5) << "seq " << s.seq;
    for (int64_t i = 0; i < stats.numel(); ++i) {
      ASSERT_TRUE(std::isfinite(stats[i]) && std::isfinite(sf[i])) << "stat " << i << " left unwritten";
      // A maximum moves by the f32 dot products' rounding; an inverse sum (up to 1) by that
      // relative to the row's terms.
      ASSERT_NEAR(sf[i], stats[i], 1e-5 * (1 + std::abs(stats[i]))) << "stat " << i;
    }
    auto dout = random_tensor<double>(qs, rng);
    Tensor<double> dq(qs), dk(kvs), dv(kvs);
    attention_backward(q.data(), k.data(), v.data(), stats.data(), dout.data(), dq.data(), dk.data(), dv.data(), s);
    auto df = cast<float>(dout);
    Tensor<float> dqf(qs), dkf(kvs), dvf(kvs);
    attention_backward(qf.data(), kf.data(), vf.data(), sf.data(), df.data(), dqf.data(), dkf.data(), dvf.data(), s);
    EXPECT_LT(rel_error(dqf, dq), 1e-5) << "seq " << s.seq;
    EXPECT_LT(rel_error(dkf, dk), 1e-5) << "seq " << s.seq;
    EXPECT_LT(rel_error(dvf, dv), 1e-5) << "seq " << s.seq;
  }
}

namespace {

// The backward recomputes the probabilities the forward took (it keeps only their softmax
// stats), and must get the same bits. Both can be read out exactly: with value row j the
// unit vector e_j, the forward's output row i is sum_j P_ij e_j, so its element j is
// P_ij (one nonzero term; the rest add zeros); with dO row i of the first head of each kv
// group e_i (other heads' dO zero), dV += P^T dO makes dv row j's element i P_ij the same
// way. Needs T <= head_dim.
template <typename T>
void check_recomputed_probabilities(const AttentionShape& s) {
  SCOPED_TRACE(::testing::Message() << "seq " << s.seq << " heads " << s.q_heads << "/" << s.kv_heads
                                    << (sizeof(T) == 8 ? " f64" : " f32"));
  const int64_t T_ = s.seq, hd = s.head_dim, G = s.q_heads / s.kv_heads;
  ASSERT_LE(T_, hd);
  const Shape qs{s.batch, T_, s.q_heads, hd}, kvs{s.batch, T_, s.kv_heads, hd};
  Rng rng(9);
  auto q = random_tensor<T>(qs, rng), k = random_tensor<T>(kvs, rng);
  Tensor<T> v(kvs), dout(qs), out(qs), stats({softmax_stats_size(s)}), dq(qs), dk(kvs), dv(kvs);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t j = 0; j < T_; ++j) {
      for (int64_t g = 0; g < s.kv_heads; ++g) v[((b * T_ + j) * s.kv_heads + g) * hd + j] = T(1);
      for (int64_t h = 0; h < s.q_heads; h += G) dout[((b * T_ + j) * s.q_heads + h) * hd + j] = T(1);
    }
  attention_forward(q.data(), k.data(), v.data(), out.data(), stats.data(), s);
  attention_backward(q.data(), k.data(), v.data(), stats.data(), dout.data(), dq.data(), dk.data(), dv.data(), s);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; h += G)
      for (int64_t i = 0; i < T_; ++i)
        for (int64_t j = 0; j < T_; ++j) {
          const T forward = out[((b * T_ + i) * s.q_heads + h) * hd + j];
          const T backward = dv[((b * T_ + j) * s.kv_heads + h / G) * hd + i];
          if (j > i) {
            ASSERT_EQ(forward, T(0)) << "a future key's weight, " << i << " " << j;
          } else {
            ASSERT_GT(forward, T(0)) << i << " " << j;
          }
          ASSERT_EQ(backward, forward) << "sequence " << b << " head " << h << " query " << i << " key " << j;
        }
}

}  // namespace

// Grouped heads, a partial last tile of 16 queries and two runs of the forward (32 rows of
// 2 heads each); then one head per group at 64 positions (one run, four whole tiles).
TEST(Attention, BackwardRecomputesTheForwardsProbabilitiesBitForBit) {
  for (const AttentionShape& s : {AttentionShape{2, 40, 4, 2, 64}, AttentionShape{1, 64, 2, 2, 64}}) {
    check_recomputed_probabilities<float>(s);
    check_recomputed_probabilities<double>(s);
  }
}

TEST(Attention, HeadsThatDoNotGroupAreAnError) {
  Tensor<float> x({1, 1, 3, 2}), p({softmax_stats_size(AttentionShape{1, 1, 3, 2, 2})});
  EXPECT_THROW(attention_forward(x.data(), x.data(), x.data(), x.data(), p.data(), AttentionShape{1, 1, 3, 2, 2}), Error);
}

namespace {

// One query row of a step: the sequence whose history it reads, and how many positions.
struct QueryRow {
  int64_t sequence, context;
};

// Rows against their sequences' histories, against naive double attention. Rows of one
// sequence with consecutive contexts form a run (a prompt chunk), which the kernel takes in
// blocks. With bf16: the histories are stored as bf16 bits (a KV cache under --kv-dtype
// bf16) and the reference reads the same rounded values.
// head_major: the kernel reads copies of the histories stored as a KV cache stores them,
// each kv head's positions one after another (head_strides), not every head side by side.
template <typename T>
void check_rows_against_naive(const std::vector<QueryRow>& rows, int64_t Hq, int64_t Hkv, int64_t hd, bool use_bf16,
                              double tolerance, bool head_major = false) {
  const int64_t kvD = Hkv * hd, n = int64_t(rows.size());
  int64_t sequences = 0;
  for (const auto& r : rows) sequences = std::max(sequences, r.sequence + 1);
  std::vector<int64_t> length(size_t(sequences), 0);
  for (const auto& r : rows) length[size_t(r.sequence)] = std::max(length[size_t(r.sequence)], r.context);
  Rng rng(7);
  std::vector<Tensor<T>> k_hist, v_hist;
  std::vector<std::vector<uint16_t>> k16(static_cast<size_t>(sequences)), v16(static_cast<size_t>(sequences));
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t L = length[size_t(s)];
    k_hist.push_back(random_tensor<T>({L + 3, kvD}, rng));  // room past the context: must not be read
    v_hist.push_back(random_tensor<T>({L + 3, kvD}, rng));
    // Positions past the longest context are poison: reading one would show in the output.
    for (int64_t j = L; j < L + 3; ++j)
      for (int64_t e = 0; e < kvD; ++e) k_hist[size_t(s)][j * kvD + e] = v_hist[size_t(s)][j * kvD + e] = T(1e6);
    if (use_bf16)
      for (auto* t : {&k_hist[size_t(s)], &v_hist[size_t(s)]}) {
        auto& bits = t == &k_hist[size_t(s)] ? k16[size_t(s)] : v16[size_t(s)];
        for (int64_t i = 0; i < t->numel(); ++i) {
          bits.push_back(f32_to_bf16(float((*t)[i])).bits);
          (*t)[i] = T(bf16_to_f32(bf16{bits.back()}));  // what the reference reads
        }
      }
  }
  // Head-major copies: position j of kv head g at g * (L + 3) * hd + j * hd.
  std::vector<std::vector<T>> k_major(static_cast<size_t>(sequences)), v_major(static_cast<size_t>(sequences));
  std::vector<std::vector<uint16_t>> k16_major(static_cast<size_t>(sequences)), v16_major(static_cast<size_t>(sequences));
  const auto by_head = [&](const auto& from, auto& to, int64_t positions) {
    to.resize(from.size());
    for (int64_t g = 0; g < Hkv; ++g)
      for (int64_t j = 0; j < positions; ++j)
        for (int64_t e = 0; e < hd; ++e) to[size_t((g * positions + j) * hd + e)] = from[size_t(j * kvD + g * hd + e)];
  };
  if (head_major)
    for (int64_t s = 0; s < sequences; ++s) {
      const int64_t positions = length[size_t(s)] + 3;
      const Tensor<T>& kh = k_hist[size_t(s)];
      const Tensor<T>& vh = v_hist[size_t(s)];
      by_head(std::vector<T>(kh.data(), kh.data() + kh.numel()), k_major[size_t(s)], positions);
      by_head(std::vector<T>(vh.data(), vh.data() + vh.numel()), v_major[size_t(s)], positions);
      if (use_bf16) {
        by_head(k16[size_t(s)], k16_major[size_t(s)], positions);
        by_head(v16[size_t(s)], v16_major[size_t(s)], positions);
      }
    }
  std::vector<const T*> keys, values;
  std::vector<const uint16_t*> keys16, values16;
  std::vector<int64_t> context, head_strides;
  for (const auto& r : rows) {
    const size_t s = size_t(r.sequence);
    keys.push_back(head_major ? k_major[s].data() : k_hist[s].data());
    values.push_back(head_major ? v_major[s].data() : v_hist[s].data());
    keys16.push_back(head_major ? k16_major[s].data() : k16[s].data());
    values16.push_back(head_major ? v16_major[s].data() : v16[s].data());
    context.push_back(r.context);
    head_strides.push_back((length[s] + 3) * hd);
  }
  auto q = random_tensor<T>({n, Hq, hd}, rng);
  AttentionRows<T> a{.rows = n, .q_heads = Hq, .kv_heads = Hkv, .head_dim = hd, .keys = keys.data(),
                     .values = values.data(), .context = context.data(), .kv_stride = head_major ? hd : kvD,
                     .head_strides = head_major ? head_strides.data() : nullptr};
  if (use_bf16) {
    a.keys = a.values = nullptr;  // the bf16 histories alone
    a.keys_bf16 = keys16.data();
    a.values_bf16 = values16.data();
  }
  Tensor<T> out({n, Hq, hd});
  attention_rows_forward(q.data(), a, out.data());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv), L = context[size_t(r)];
      const Tensor<T>& kh = k_hist[size_t(rows[size_t(r)].sequence)];
      const Tensor<T>& vh = v_hist[size_t(rows[size_t(r)].sequence)];
      std::vector<double> s(static_cast<size_t>(L));
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < L; ++j) {
        double d = 0;
        for (int64_t e = 0; e < hd; ++e) d += double(q[(r * Hq + h) * hd + e]) * double(kh[j * kvD + g * hd + e]);
        s[size_t(j)] = d / std::sqrt(double(hd));
        mx = std::max(mx, s[size_t(j)]);
      }
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int64_t e = 0; e < hd; ++e) {
        double want = 0;
        for (int64_t j = 0; j < L; ++j) want += s[size_t(j)] / sum * double(vh[j * kvD + g * hd + e]);
        ASSERT_NEAR(double(out[(r * Hq + h) * hd + e]), want, tolerance)
            << (use_bf16 ? "bf16 " : "") << "hd " << hd << " heads " << Hq << "/" << Hkv << " row " << r << " head "
            << h << " dim " << e;
      }
    }
}

// Each row against a history of its own.
void check_rows_against_naive(bool use_bf16, int64_t hd) {
  check_rows_against_naive<float>({{0, 1}, {1, 17}, {2, 40}, {3, 33}}, 8, 2, hd, use_bf16, 2e-5);
}

// A step as serving builds it: a decode row, a prompt chunk continuing a history (150 rows
// from position 130: several blocks of keys and of query rows, a ragged last one), a run
// too short to block (3 rows), and a fresh prompt (70 rows from position 0).
std::vector<QueryRow> mixed_step() {
  std::vector<QueryRow> rows = {{0, 5}};
  for (int64_t i = 0; i < 150; ++i) rows.push_back({1, 131 + i});
  for (int64_t i = 0; i < 3; ++i) rows.push_back({2, 9 + i});
  for (int64_t i = 0; i < 70; ++i) rows.push_back({3, 1 + i});
  return rows;
}

}  // namespace

// Runs of consecutive rows (prefill) go through blocked tiles with an online softmax: the
// same attention as the naive one, for grouped heads of 1, 2 and 4 queries per kv head,
// head sizes with and without a ragged 16-lane tail, f32 and bf16 histories, and double.
TEST(Attention, PromptRunsInBlocksMatchNaive) {
  for (auto [Hq, Hkv] : {std::pair<int64_t, int64_t>{4, 4}, {4, 2}, {8, 2}})
    for (int64_t hd : {16, 20, 40, 64}) {  // value rows of 16, 32, 48 and 64: each column split of the tiles
      check_rows_against_naive<float>(mixed_step(), Hq, Hkv, hd, false, 2e-5);
      check_rows_against_naive<float>(mixed_step(), Hq, Hkv, hd, true, 2e-5);
    }
  check_rows_against_naive<double>(mixed_step(), 8, 2, 20, false, 1e-12);
}

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

// Histories stored as a KV cache holds them, each kv head's positions one after another
// (model/kv_cache.h), each sequence with its own head stride: a serving step's rows (a
// decode row, prompt chunks in blocks) and decode rows at model head sizes, f32 and bf16.
TEST(Attention, HistoriesStoredHeadByHeadMatchNaive) {
  const std::vector<QueryRow> decode_rows = {{0, 1}, {1, 16}, {2, 17}, {3, 100}};
  for (bool use_bf16 : {false, true}) {
    check_rows_against_naive<float>(mixed_step(), 8, 2, 64, use_bf16, 2e-5, true);
    check_rows_against_naive<float>(mixed_step(), 4, 4, 20, use_bf16, 2e-5, true);
    for (int64_t hd : {64, 128}) check_rows_against_naive<float>(decode_rows, 8, 2, hd, use_bf16, 2e-5, true);
  }
  check_rows_against_naive<double>(mixed_step(), 8, 2, 20, false, 1e-12, true);
}

// Decode rows at the head sizes the vectorised group kernel takes (kernels/attention_group:
// 64, 96, 128, 256 on AVX-512), 1 to 5 query heads per kv head (its passes of 4, 2 or 1
// heads and the heads left over), contexts below, at and past a block of 16 keys, f32 and
// bf16 histories: against naive double attention.
TEST(Attention, DecodeRowsAtModelHeadSizesMatchNaive) {
  const std::vector<QueryRow> rows = {{0, 1}, {1, 15}, {2, 16}, {3, 17}, {4, 40}, {5, 100}};
  for (int64_t hd : {64, 96, 128, 256})
    for (auto [Hq, Hkv] : {std::pair<int64_t, int64_t>{4, 4}, {8, 4}, {6, 2}, {8, 2}, {10, 2}})
      for (bool use_bf16 : {false, true}) check_rows_against_naive<float>(rows, Hq, Hkv, hd, use_bf16, 2e-5);
}
