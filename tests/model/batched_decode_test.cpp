// Many sequences in one decoder step: sequences of different prompt lengths, each with its
// own KV cache, prefilled together and then decoded together one token per step (and a
// step that mixes one sequence's prefill with the others' decodes) give, for every
// sequence, the logits of running it alone in a Session - in f32 (the path matched to the
// PyTorch reference), and on bf16 and q8_0 weights against their own single-sequence runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>

#include "infer/session.h"
#include "model/decoder.h"
#include "model/packed_model.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

ModelConfig config() {
  ModelConfig cfg = ModelConfig::preset("tiny", 64);  // hidden 32, 4 q heads over 2 kv heads
  cfg.moe_expert_interval = 2;                        // dense and MoE layers, gating residual across
  cfg.num_hidden_layers = 4;
  cfg.initializer_range = 0.3;
  return cfg;
}

ModelParams<float> random_weights(const ModelConfig& cfg, uint64_t seed) {
  auto w = ModelParams<float>::zeros(cfg);
  Rng rng(seed);
  w.init(cfg, rng);
  return w;
}

// Fixed token streams: prompt, then the tokens fed at each decode step.
const std::vector<std::vector<int32_t>> kPrompts = {{5}, {1, 7, 33}, {2, 49, 0, 18, 18, 5}, {11, 63, 12, 9, 4, 4, 30, 8, 1}};
const std::vector<std::vector<int32_t>> kDecoded = {
    {3, 9, 27, 2, 60}, {44, 1, 1, 8, 13}, {0, 62, 31, 7, 7}, {19, 5, 42, 22, 6}};
constexpr int64_t kCapacity = 24;
constexpr double kBf16KvBatchTolerance = 5e-4;

// Per sequence, the logits of its last prompt token and of each decoded token, run alone
// (the prompt appended max_rows tokens at a time at most; 0: in one piece).
std::vector<std::vector<std::vector<float>>> alone(const std::function<Session<float>()>& make, int64_t V,
                                                   int64_t max_rows = 0) {
  std::vector<std::vector<std::vector<float>>> out;
  for (size_t s = 0; s < kPrompts.size(); ++s) {
    Session<float> session = make();
    Tensor<float> logits;
    std::vector<std::vector<float>> seq;
    const int64_t n = int64_t(kPrompts[s].size());
    for (int64_t at = 0; at < n;) {
      const int64_t chunk = max_rows ? std::min(max_rows, n - at) : n;
      session.append(kPrompts[s].data() + at, chunk, logits);
      at += chunk;
    }
    seq.emplace_back(logits.data() + (logits.dim(0) - 1) * V, logits.data() + logits.dim(0) * V);
    for (int32_t t : kDecoded[s]) {
      session.append(&t, 1, logits);
      seq.emplace_back(logits.data(), logits.data() + V);
    }
    out.push_back(std::move(seq));
  }
  return out;
}

double relative_error(const float* got, const std::vector<float>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(double(got[i]) - want[i]));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return err / scale;
}

// All sequences prefilled together (in one step, or in steps of max_rows rows at most, the
// sequences' prompts cut into pieces as they fit, and the alone runs likewise), then
// decoded together, one step per token.
void expect_batched_equals_alone(const ModelConfig& cfg, const DecoderWeights<float>& w,
                                 const std::function<Session<float>()>& make, double tol,
                                 KvDtype kv = KvDtype::f32, int64_t max_rows = 0) {
  const int64_t V = cfg.vocab_size, N = int64_t(kPrompts.size());
  const auto want = alone(make, V, max_rows);
  std::vector<std::unique_ptr<KvCache<float>>> caches;
  for (int64_t s = 0; s < N; ++s) caches.push_back(std::make_unique<KvCache<float>>(cfg, kCapacity, kv));
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  std::vector<int64_t> prefilled(size_t(N), 0);
  for (int64_t s = 0; s < N;) {  // s: the first sequence with prompt tokens left
    std::vector<SequenceStep<float>> steps;
    std::vector<int64_t> finished;  // sequences whose prompt ends in this step
    int64_t room = max_rows ? max_rows : std::numeric_limits<int64_t>::max();
    for (int64_t q = s; q < N && room > 0; ++q) {
      const int64_t left = int64_t(kPrompts[size_t(q)].size()) - prefilled[size_t(q)];
      const int64_t take = std::min(left, room);
      steps.push_back({caches[size_t(q)].get(), kPrompts[size_t(q)].data() + prefilled[size_t(q)], take});
      prefilled[size_t(q)] += take;
      room -= take;
      finished.push_back(take == left ? q : -1);
    }
    decoder_step<float>(cfg, w, steps, scratch, logits, LogitRows::last);
    ASSERT_EQ(logits.dim(0), int64_t(steps.size()));
    for (size_t i = 0; i < finished.size(); ++i) {
      if (finished[i] < 0) continue;
      EXPECT_LE(relative_error(logits.data() + int64_t(i) * V, want[size_t(finished[i])][0]), tol)
          << "sequence " << finished[i] << " prefill";
    }
    while (s < N && prefilled[size_t(s)] == int64_t(kPrompts[size_t(s)].size())) ++s;
  }
  std::vector<SequenceStep<float>> steps(static_cast<size_t>(N));
  for (size_t t = 0; t < kDecoded[0].size(); ++t) {
    for (int64_t s = 0; s < N; ++s) steps[size_t(s)] = {caches[size_t(s)].get(), &kDecoded[size_t(s)][t], 1};
    decoder_step<float>(cfg, w, steps, scratch, logits, LogitRows::all);
    ASSERT_EQ(logits.dim(0), N);
    for (int64_t s = 0; s < N; ++s) {
      EXPECT_EQ(caches[size_t(s)]->length(), int64_t(kPrompts[size_t(s)].size() + t + 1));
      EXPECT_LE(relative_error(logits.data() + s * V, want[size_t(s)][t + 1]), tol)
          << "sequence " << s << " decode step " << t;
    }
  }
}

}  // namespace

TEST(BatchedDecode, ManySequencesInOneStepEqualEachAloneF32) {
  const ModelConfig cfg = config();
  auto w = random_weights(cfg, 11);
  expect_batched_equals_alone(cfg, DecoderWeights<float>::of(w), [&] { return Session<float>(cfg, w, kCapacity); },
                              1e-5);
}

TEST(BatchedDecode, ManySequencesInOneStepEqualEachAlonePacked) {
  for (WeightType type : {WeightType::bf16, WeightType::q8_0, WeightType::q4}) {
    SCOPED_TRACE(weight_type_name(type));
    const ModelConfig cfg = config();
    auto w = random_weights(cfg, 12);
    const auto packed = PackedModel::pack(cfg, std::move(w), type);
    const auto dw = DecoderWeights<float>::of(*packed);
    auto make = [&] { return Session<float>(*packed, kCapacity); };
    // How a product multiplies depends on its rows (kernels/quant.h): up to 8, f32 or int8
    // activations; beyond, bf16 ones on a bf16 CPU, or int8 on AMX tiles. Steps of at most
    // 8 rows, batched and alone, take the same arithmetic on every CPU: then only the order
    // of f32 sums differs. (With more rows, batched against alone would compare two
    // roundings of the activations, which this test model's large weights amplify past any
    // useful bound where a routing decision flips: 0.70 of the logits' scale was seen on a
    // CPU with bf16 products and no AMX.)
    const double tol = packed_products_use_int8(type, 1) ? kInt8SameRowsTolerance : 1e-5;
    expect_batched_equals_alone(cfg, dw, make, tol, KvDtype::f32, /*max_rows=*/8);
    // The whole prompts in one step where the many-row products quantize each row as the
    // few-row ones do (q8_0 and q4 on AMX).
    if (packed_products_use_int8(type, 1) && packed_products_use_int8(type, 19))
      expect_batched_equals_alone(cfg, dw, make, kInt8SameRowsTolerance);
  }
}

// bf16 KV caches (--kv-dtype bf16): batched steps equal each sequence alone up to a rounding
// step, and a sequence's logits stay within the rounding of its keys and values of the f32
// cache's. (A batch's projections sum in another order than one sequence's, by ~1e-7; where
// that crosses a bf16 rounding boundary, one key or value element moves by 2^-9 of itself:
// measured up to 8e-5 of the logits' scale here, against 1e-5 with f32 caches.)
TEST(BatchedDecode, Bf16KvCachesInOneStepEqualEachAloneAndStayNearF32Caches) {
  const ModelConfig cfg = config();
  auto w = random_weights(cfg, 14);
  expect_batched_equals_alone(cfg, DecoderWeights<float>::of(w),
                              [&] { return Session<float>(cfg, w, kCapacity, KvDtype::bf16); }, kBf16KvBatchTolerance,
                              KvDtype::bf16);
  const auto f32 = alone([&] { return Session<float>(cfg, w, kCapacity); }, cfg.vocab_size);
  const auto bf16 = alone([&] { return Session<float>(cfg, w, kCapacity, KvDtype::bf16); }, cfg.vocab_size);
  double worst = 0;
  for (size_t s = 0; s < f32.size(); ++s)
    for (size_t t = 0; t < f32[s].size(); ++t) worst = std::max(worst, relative_error(bf16[s][t].data(), f32[s][t]));
  // Keys and values rounded to 8 significant bits move each attention output by ~2^-9; this
  // test model's large weights (initializer 0.3) and 4 layers compound that to 1.4e-2 of the
  // logits' scale at worst (measured), under the bound bf16 activations are held to.
  EXPECT_LT(worst, kBf16ActivationTolerance);
  EXPECT_GT(worst, 1e-5) << "the cache was not rounded";
  std::printf("bf16 KV cache: worst logit difference %.2e of the logits' scale\n", worst);
}

TEST(BatchedDecode, RefusesAStepThatMixesF32AndBf16Caches) {
  const ModelConfig cfg = config();
  auto w = random_weights(cfg, 15);
  KvCache<float> a(cfg, kCapacity), b(cfg, kCapacity, KvDtype::bf16);
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  const std::vector<SequenceStep<float>> mixed = {{&a, kPrompts[0].data(), 1}, {&b, kPrompts[1].data(), 1}};
  expect_error_mentioning([&] { decoder_step<float>(cfg, DecoderWeights<float>::of(w), mixed, scratch, logits); },
                          "decoder: a step mixes f32 and bf16 KV caches");
  EXPECT_EQ(a.length(), 0);
  EXPECT_EQ(b.length(), 0);
}

// Continuous batching: sequence 1 prefills while sequence 0 decodes, in one step.
TEST(BatchedDecode, APrefillAndADecodeShareAStep) {
  const ModelConfig cfg = config();
  const int64_t V = cfg.vocab_size;
  auto w = random_weights(cfg, 13);
  const auto want = alone([&] { return Session<float>(cfg, w, kCapacity); }, V);
  const auto dw = DecoderWeights<float>::of(w);
  KvCache<float> a(cfg, kCapacity), b(cfg, kCapacity);
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  SequenceStep<float> first{&a, kPrompts[3].data(), int64_t(kPrompts[3].size())};
  decoder_step<float>(cfg, dw, {&first, 1}, scratch, logits, LogitRows::last);
  const std::vector<SequenceStep<float>> mixed = {{&a, &kDecoded[3][0], 1},
                                                  {&b, kPrompts[2].data(), int64_t(kPrompts[2].size())}};
  decoder_step<float>(cfg, dw, mixed, scratch, logits, LogitRows::all);
  ASSERT_EQ(logits.dim(0), 1 + int64_t(kPrompts[2].size()));
  EXPECT_LE(relative_error(logits.data(), want[3][1]), 1e-5);
  EXPECT_LE(relative_error(logits.data() + (logits.dim(0) - 1) * V, want[2][0]), 1e-5);
}

TEST(BatchedDecode, RefusesASequenceTwiceAndAFullCache) {
  const ModelConfig cfg = config();
  auto w = ModelParams<float>::zeros(cfg);
  const auto dw = DecoderWeights<float>::of(w);
  KvCache<float> a(cfg, 4);
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  const std::vector<SequenceStep<float>> twice = {{&a, ids.data(), 1}, {&a, ids.data(), 1}};
  expect_error_mentioning([&] { decoder_step<float>(cfg, dw, twice, scratch, logits); }, "appears twice");
  SequenceStep<float> too_long{&a, ids.data(), 5};
  expect_error_mentioning([&] { decoder_step<float>(cfg, dw, {&too_long, 1}, scratch, logits); },
                          "exceed the sequence's context of 4");
  EXPECT_EQ(a.length(), 0);
}

// The prompt cache's copy (KvCache::copy_prefix, serve/scheduler.h): a cache that takes all of
// another's positions continues exactly as the other does, bit for bit (every layer's keys
// and values came across); one that takes a prefix, into a cache that held another
// sequence before, continues as the sequence alone does (its own old positions unread).
TEST(BatchedDecode, ACopiedPrefixContinuesAsTheSequenceItCameFrom) {
  const ModelConfig cfg = config();
  const int64_t V = cfg.vocab_size;
  auto w = random_weights(cfg, 16);
  const auto dw = DecoderWeights<float>::of(w);
  const std::vector<int32_t>& prompt = kPrompts[3];
  const std::vector<int32_t>& decoded = kDecoded[3];
  for (KvDtype kv : {KvDtype::f32, KvDtype::bf16}) {
    SCOPED_TRACE(kv_dtype_name(kv));
    const auto want = alone([&] { return Session<float>(cfg, w, kCapacity, kv); }, V);
    DecoderScratch<float> scratch;
    Tensor<float> logits;
    auto run = [&](KvCache<float>& c, const int32_t* ids, int64_t n) {
      SequenceStep<float> step{&c, ids, n};
      decoder_step<float>(cfg, dw, {&step, 1}, scratch, logits, LogitRows::last);
      return std::vector<float>(logits.data(), logits.data() + V);
    };
    KvCache<float> source(cfg, kCapacity, kv);
    run(source, prompt.data(), int64_t(prompt.size()));
    run(source, &decoded[0], 1);
    // All of it, into a smaller cache: the next steps give the source's bits.
    KvCache<float> whole(cfg, 12, kv);
    whole.copy_prefix(source, source.length());
    EXPECT_EQ(whole.length(), int64_t(prompt.size()) + 1);
    for (size_t t = 1; t < 3; ++t) {
      const std::vector<float> a = run(source, &decoded[t], 1), b = run(whole, &decoded[t], 1);
      EXPECT_EQ(a, b) << "decode step " << t;
      EXPECT_LE(relative_error(b.data(), want[3][t + 1]), kv == KvDtype::f32 ? 1e-5 : kBf16KvBatchTolerance);
    }
    // Its first 6 positions, into a cache that ran another prompt to 9 positions first.
    KvCache<float> part(cfg, kCapacity, kv);
    run(part, kPrompts[2].data(), int64_t(kPrompts[2].size()));
    run(part, kPrompts[1].data(), 3);
    part.copy_prefix(source, 6);
    EXPECT_EQ(part.length(), 6);
    const std::vector<float> last = run(part, prompt.data() + 6, int64_t(prompt.size()) - 6);
    const double tol = kv == KvDtype::f32 ? 1e-5 : kBf16KvBatchTolerance;
    EXPECT_LE(relative_error(last.data(), want[3][0]), tol);
    for (size_t t = 0; t < decoded.size(); ++t)
      EXPECT_LE(relative_error(run(part, &decoded[t], 1).data(), want[3][t + 1]), tol) << "decode step " << t;
  }
  KvCache<float> f32(cfg, kCapacity), bf16(cfg, kCapacity, KvDtype::bf16), small(cfg, 4);
  expect_error_mentioning([&] { f32.copy_prefix(bf16, 0); }, "cannot copy bf16 positions into a f32 cache");
  expect_error_mentioning([&] { small.copy_prefix(f32, 1); }, "cannot copy 1 positions (the source holds 0");
  EXPECT_EQ(small.length(), 0);
}
