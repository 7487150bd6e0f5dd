// The serving scheduler against the one-sequence generator: sequences submitted together
// (decoded in one batch, prompts of different lengths, prefill chunked across steps) give
// the text generate_text gives each alone, greedy and seeded; scoring with prompt
// log-probabilities equals log-softmax of the full-sequence logits; cancelled and
// over-the-bound requests are refused or dropped. Plus the API's request checks and the
// chat templates in closed form.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>

#include "core/parallel.h"
#include "core/rng.h"
#include "infer/generation.h"
#include "infer/generator.h"
#include "model/decoder.h"
#include "model/kv_cache.h"
#include "serve/openai_api.h"
#include "serve/scheduler.h"
#include "serve/tokenizer_api.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer tok = [] {
    const std::string dir = test::scratch_dir("moepp-scheduler");
    {
      std::ofstream out(dir + "/corpus.txt");
      for (int i = 1; i <= 400; ++i) out << "Line " << i << ": the quick brown fox jumps over the lazy dog " << i % 13 << ".\n";
    }
    Tokenizer::train({dir + "/corpus.txt"}, dir + "/tokenizer.model", 400);
    return Tokenizer(dir + "/tokenizer.model");
  }();
  return tok;
}

struct TinyModel {
  ModelConfig cfg;
  ModelParams<float> params;
  TinyModel() : cfg(ModelConfig::preset("tiny", tokenizer().vocab_size())), params(ModelParams<float>::zeros(cfg)) {
    cfg.eos_token_id = tokenizer().eos_id();
    Rng rng(11);
    params.init(cfg, rng);
  }
};

// A prompt's scores (log-probabilities of tokens 1.., top lists of k) as a whole prefill
// gives them (`want`), to 1e-5.
void expect_same_scores(const std::vector<TokenLogprob>& got, const std::vector<TokenLogprob>& want,
                        const std::vector<int32_t>& prompt, int k) {
  ASSERT_EQ(got.size(), prompt.size() - 1);
  ASSERT_EQ(want.size(), prompt.size() - 1);
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_EQ(got[t].id, prompt[t + 1]);
    EXPECT_NEAR(got[t].logprob, want[t].logprob, 1e-5) << "token " << t + 1;
    ASSERT_EQ(got[t].top.size(), size_t(k));
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(got[t].top[size_t(j)].first, want[t].top[size_t(j)].first) << "token " << t + 1;
      EXPECT_NEAR(got[t].top[size_t(j)].second, want[t].top[size_t(j)].second, 1e-5);
    }
  }
}

size_t shared_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

std::string drain(Stream& s) {
  std::string text, piece;
  while (s.next(piece)) text += piece;
  return text;
}

}  // namespace

TEST(Scheduler, DecoderStepsRunOnTheThreadCountItsCreatorSet) {
  // The worker is a new thread, which OpenMP starts at its default team size (every CPU);
  // serve --threads N sets the count on the creating thread only.
  const TinyModel m;
  const int before = max_threads();
  for (int threads : {1, 2}) {
    set_threads(threads);
    Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tokenizer(), SchedulerOptions{});
    for (int wait = 0; wait < 500 && sched.metrics().decoder_threads == 0; ++wait) usleep(10000);
    EXPECT_EQ(sched.metrics().decoder_threads, threads);
  }
  set_threads(before);
}

TEST(Scheduler, BatchedSequencesGiveWhatEachGivesAlone) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const std::vector<std::string> prompts = {"Line 1", "Line 22: the quick brown fox jumps over", "the lazy",
                                            "Line 7: the quick brown fox jumps over the lazy dog 3.\nLine 8: the"};
  // prefill_chunk 5: the longer prompts are prefilled over several steps beside decodes.
  Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{8, 0, 16, 5});
  std::vector<std::shared_ptr<Stream>> streams;
  std::vector<GenerateOptions> options;
  for (size_t i = 0; i < prompts.size() * 2; ++i) {
    GenerateOptions o;
    o.max_tokens = 12 + int(i);
    o.sampler = i % 2 == 0 ? SamplerOptions{0.0, 0, 1.0, 1} : SamplerOptions{0.9, 20, 0.9, 100 + i};
    options.push_back(o);
    streams.push_back(sched.submit(SequenceRequest{tok.encode_prompt(prompts[i / 2]), o}));
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    const std::string got = drain(*streams[i]);
    EXPECT_TRUE(streams[i]->error().empty()) << streams[i]->error();
    const std::string alone = generate_text(m.cfg, m.params, tok, prompts[i / 2], options[i]);
    const std::vector<int32_t> ids = tok.encode_prompt(prompts[i / 2]);
    EXPECT_EQ(tok.decode(std::vector<int32_t>(ids.begin() + 1, ids.end())) + got, alone) << "sequence " << i;
    EXPECT_EQ(streams[i]->stats().generated_tokens, int64_t(streams[i]->generated().size()));
  }
  EXPECT_TRUE(sched.idle());
  EXPECT_EQ(sched.metrics().kv_positions_in_use, 0);
}

TEST(Scheduler, PromptLogprobsAreLogSoftmaxOfTheFullSequenceLogits) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const std::vector<int32_t> ids = tok.encode_prompt("Line 5: the quick brown fox");
  Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{4, 0, 4, 256});
  GenerateOptions o;
  o.max_tokens = 0;
  const auto s = sched.submit(SequenceRequest{ids, o, 3, 3});
  drain(*s);
  ASSERT_EQ(s->prompt_logprobs().size(), ids.size() - 1);
  // The reference: every row of one decoder step, log-softmax in double.
  KvCache<float> cache(m.cfg, int64_t(ids.size()));
  DecoderScratch<float> scratch;
  Tensor<float> logits;
  const std::vector<SequenceStep<float>> steps = {{&cache, ids.data(), int64_t(ids.size())}};
  decoder_step(m.cfg, DecoderWeights<float>::of(m.params), std::span<const SequenceStep<float>>(steps), scratch, logits);
  const int64_t V = m.cfg.vocab_size;
  for (size_t p = 1; p < ids.size(); ++p) {
    const float* row = logits.data() + int64_t(p - 1) * V;
    double mx = row[0], sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
    const double want = double(row[ids[p]]) - mx - std::log(sum);
    const TokenLogprob& got = s->prompt_logprobs()[p - 1];
    EXPECT_EQ(got.id, ids[p]);
    EXPECT_NEAR(got.logprob, want, 1e-5) << "position " << p;
    ASSERT_EQ(got.top.size(), 3u);
    EXPECT_GE(got.top[0].second, got.top[1].second);
    EXPECT_GE(got.top[0].second, got.logprob - 1e-6);
  }
}

TEST(Scheduler, RefusesBeyondTheQueueAndDropsCancelledSequences) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{1, 0, 0, 256});
  GenerateOptions o;
  o.max_tokens = 100;
  o.sampler = SamplerOptions{1.0, 0, 1.0, 3};
  const auto first = sched.submit(SequenceRequest{tok.encode_prompt("Line 1"), o});
  EXPECT_THROW(
      {
        for (int i = 0; i < 4; ++i) sched.submit(SequenceRequest{tok.encode_prompt("Line 2"), o});
      },
      QueueFull);
  first->cancel();
  drain(*first);
  EXPECT_EQ(first->error(), "cancelled by the client");
  EXPECT_LT(first->stats().generated_tokens, 100);
  GenerateOptions too_long;
  too_long.max_tokens = 1;
  const std::vector<int32_t> huge(static_cast<size_t>(m.cfg.max_position_embeddings), 5);
  expect_error_mentioning([&] { sched.submit(SequenceRequest{huge, too_long}); }, "fills the context");
}

// The prompt cache: a prompt that begins with a finished sequence's tokens (its prompt and
// all it generated but the last token, which was never fed) starts from a copy of that
// cache, and gives the text the same prompt gives prefilled whole (a scheduler without
// the cache); cache_prompt false, scored prompts and prompts sharing fewer than 16 tokens
// are prefilled whole; kept caches give way to running ones within the KV budget.
TEST(Scheduler, APromptThatBeginsLikeAFinishedSequenceStartsFromItsCache) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const auto weights = DecoderWeights<float>::of(m.params);
  GenerateOptions greedy;
  greedy.max_tokens = 10;
  greedy.ignore_eos = true;
  greedy.sampler = SamplerOptions{0.0, 0, 1.0, 1};
  auto text_of = [&](Scheduler& sched, SequenceRequest q) {
    const auto s = sched.submit(std::move(q));
    std::string text = drain(*s);
    EXPECT_TRUE(s->error().empty()) << s->error();
    return std::make_pair(text, s->generated());
  };
  // The generated tokens' log-probabilities: the copied keys and values must be the ones
  // a whole prefill computes (text alone hardly depends on this model's attention).
  auto logprobs_of = [&](Scheduler& sched, const std::vector<int32_t>& prompt) {
    const auto s = sched.submit(SequenceRequest{prompt, greedy, 0});
    drain(*s);
    std::vector<float> out;
    for (const auto& t : s->logprobs()) out.push_back(t.logprob);
    return out;
  };
  auto expect_near = [](const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "token " << i;
  };
  const std::vector<int32_t> first = tok.encode_prompt("Line 7: the quick brown fox jumps over the lazy dog 3.");
  ASSERT_GE(first.size(), 6u);
  Scheduler sched(m.cfg, weights, tok, SchedulerOptions{4, 64, 16, 256});
  Scheduler whole(m.cfg, weights, tok, SchedulerOptions{4, 64, 16, 256, KvDtype::f32, /*prompt_cache=*/false});
  const auto [text1, generated1] = text_of(sched, SequenceRequest{first, greedy});
  ASSERT_EQ(generated1.size(), 10u);
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, 0);
  // Kept at its capacity: the prompt and 9 of the 10 tokens (the last never fed) are within
  // a quarter of it.
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(first.size()) + 10);
  EXPECT_EQ(sched.metrics().kv_positions_in_use, 0);
  // The next turn: the first sequence's tokens, then more.
  std::vector<int32_t> next = first;
  next.insert(next.end(), generated1.begin(), generated1.end());
  const std::vector<int32_t> more = tok.encode(" Line 8: the quick");
  next.insert(next.end(), more.begin(), more.end());
  const auto [text2, generated2] = text_of(sched, SequenceRequest{next, greedy});
  const int64_t shared = int64_t(first.size()) + 9;
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, shared);
  EXPECT_EQ(text2, text_of(whole, SequenceRequest{next, greedy}).first);
  EXPECT_EQ(whole.metrics().prompt_tokens_cached, 0);
  expect_near(logprobs_of(sched, next), logprobs_of(whole, next));
  // (from the second sequence's cache, all but the prompt's last token)
  int64_t cached = shared + int64_t(next.size()) - 1;
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, cached);
  // The second sequence's cache replaced the first's (whose tokens begin it).
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(next.size()) + 10);
  // Not taken: cache_prompt false; a scored prompt; a prompt sharing fewer than 16 tokens.
  SequenceRequest uncached{next, greedy};
  uncached.cache_prompt = false;
  EXPECT_EQ(text_of(sched, uncached).first, text2);
  GenerateOptions score;
  score.max_tokens = 0;
  text_of(sched, SequenceRequest{next, score, 1, 1});
  std::vector<int32_t> short_share(next.begin(), next.begin() + 15);
  short_share.push_back(3);
  text_of(sched, SequenceRequest{short_share, greedy});
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, cached);
  // A request in the cached sequence's place: the same text as prefilled whole.
  std::vector<int32_t> again(next.begin(), next.begin() + 20);
  const auto [text3, generated3] = text_of(sched, SequenceRequest{again, greedy});
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, cached + 19);
  EXPECT_EQ(text3, text_of(whole, SequenceRequest{again, greedy}).first);
  expect_near(logprobs_of(sched, again), logprobs_of(whole, again));
}

// Scored prompts (echo + logprobs, as evaluation harnesses send a context with each of its
// continuations): one that begins like a scored sequence takes its cache and the shared
// tokens' log-probabilities (top lists cut to its own k), and scores as a whole prefill
// does; a sequence scored with shorter top lists, or not scored, gives it nothing.
TEST(Scheduler, ScoredPromptsSharingAContextTakeItsLogprobs) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const auto weights = DecoderWeights<float>::of(m.params);
  Scheduler sched(m.cfg, weights, tok, SchedulerOptions{4, 96, 16, 256});
  Scheduler whole(m.cfg, weights, tok, SchedulerOptions{4, 96, 16, 256, KvDtype::f32, /*prompt_cache=*/false});
  GenerateOptions score;
  score.max_tokens = 0;
  auto scored = [&](Scheduler& s, const std::vector<int32_t>& prompt, int k) {
    const auto stream = s.submit(SequenceRequest{prompt, score, -1, k});
    drain(*stream);
    EXPECT_TRUE(stream->error().empty()) << stream->error();
    return stream->prompt_logprobs();
  };
  const std::vector<int32_t> context =
      tok.encode_prompt("Line 9: the quick brown fox jumps over the lazy dog 9.\nLine 10: the quick brown fox");
  ASSERT_GE(context.size(), 18u);
  auto with = [&](const std::string& continuation) {
    std::vector<int32_t> p = context;
    const std::vector<int32_t> c = tok.encode(continuation);
    p.insert(p.end(), c.begin(), c.end());
    return p;
  };
  const std::vector<int32_t> a = with(" jumps over the lazy dog"), b = with(" sleeps under a tree");
  scored(sched, a, 2);
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, 0);
  size_t common = 0;
  while (a[common] == b[common]) ++common;
  for (int k : {1, 3}) {  // k 1: a's taken, cut to 1; k 3: a's lists and b's (just kept) too short
    SCOPED_TRACE("k " + std::to_string(k));
    const int64_t before = sched.metrics().prompt_tokens_cached;
    const std::vector<TokenLogprob> got = scored(sched, b, k), want = scored(whole, b, k);
    EXPECT_EQ(sched.metrics().prompt_tokens_cached - before, k == 3 ? 0 : int64_t(common) - 1);
    expect_same_scores(got, want, b, k);
  }
}

// Scored prompts queued together (an evaluation harness's batch: one context, several
// continuations) do not wait for a kept cache: they copy the first one's context and its
// log-probabilities as it prefills, and score as whole prefills do. One asking for longer
// top lists than the first's prefills its prompt itself.
TEST(Scheduler, ScoredPromptsQueuedTogetherPrefillTheirContextOnce) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const auto weights = DecoderWeights<float>::of(m.params);
  Scheduler sched(m.cfg, weights, tok, SchedulerOptions{8, 96, 16, 256});
  Scheduler whole(m.cfg, weights, tok, SchedulerOptions{8, 96, 16, 256, KvDtype::f32, /*prompt_cache=*/false});
  GenerateOptions score;
  score.max_tokens = 0;
  const std::vector<int32_t> context =
      tok.encode_prompt("Line 11: the quick brown fox jumps over the lazy dog 11.\nLine 12: the quick brown fox");
  std::vector<std::vector<int32_t>> prompts;
  for (const char* continuation : {" jumps over the lazy dog", " sleeps under a tree", " runs", " jumps high"}) {
    std::vector<int32_t> p = context;
    const std::vector<int32_t> c = tok.encode(continuation);
    p.insert(p.end(), c.begin(), c.end());
    prompts.push_back(p);
  }
  const std::vector<int> k = {2, 1, 2, 3};
  std::vector<SequenceRequest> batch;
  for (size_t i = 0; i < prompts.size(); ++i) batch.push_back(SequenceRequest{prompts[i], score, -1, k[i]});
  const std::vector<std::shared_ptr<Stream>> streams = sched.submit_all(batch);
  int64_t want_cached = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    drain(*streams[i]);
    ASSERT_TRUE(streams[i]->error().empty()) << streams[i]->error();
    const auto reference = whole.submit(batch[i]);
    drain(*reference);
    expect_same_scores(streams[i]->prompt_logprobs(), reference->prompt_logprobs(), prompts[i], k[i]);
    if (i == 1 || i == 2) want_cached += int64_t(shared_length(prompts[0], prompts[i])) - 1;
  }
  EXPECT_GE(shared_length(prompts[0], prompts[1]), context.size());
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, want_cached);
}

// A request's n choices (sequences submitted together with one prompt) prefill it once:
// the others wait for the first's prefill and copy all of it but the last token, and each
// gives the text it gives alone; the copy is taken also when the first ends right there.
// Prompts that only begin alike share their common beginning the same way.
TEST(Scheduler, SequencesWithOnePromptPrefillItOnce) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const std::string prompt = "Line 7: the quick brown fox jumps over the lazy dog 3.\nLine 8: the";
  const std::vector<int32_t> ids = tok.encode_prompt(prompt);
  ASSERT_GT(ids.size(), 17u);
  Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{8, 0, 16, 256});
  std::vector<GenerateOptions> options;
  std::vector<std::shared_ptr<Stream>> streams;
  for (int i = 0; i < 3; ++i) {
    GenerateOptions o;
    o.max_tokens = 9;
    o.sampler = i == 0 ? SamplerOptions{0.0, 0, 1.0, 1} : SamplerOptions{0.9, 20, 0.9, uint64_t(40 + i)};
    options.push_back(o);
    streams.push_back(sched.submit(SequenceRequest{ids, o}));
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    const std::string got = drain(*streams[i]);
    EXPECT_TRUE(streams[i]->error().empty()) << streams[i]->error();
    EXPECT_EQ(tok.decode(std::vector<int32_t>(ids.begin() + 1, ids.end())) + got,
              generate_text(m.cfg, m.params, tok, prompt, options[i]))
        << "sequence " << i;
  }
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, 2 * (int64_t(ids.size()) - 1));
  // The first scores its prompt and ends after its prefill: the second still takes it.
  GenerateOptions score;
  score.max_tokens = 0;
  std::vector<int32_t> other = ids;
  other.back() = 5;
  const auto first = sched.submit(SequenceRequest{other, score, -1, 0});
  const auto second = sched.submit(SequenceRequest{other, options[0]});
  drain(*first);
  drain(*second);
  EXPECT_TRUE(second->error().empty()) << second->error();
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, 3 * (int64_t(ids.size()) - 1));
  // Prompts that only begin alike (one system prompt, two users) share that beginning (a
  // scheduler of their own: the one above keeps caches that begin alike too).
  Scheduler fresh(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{8, 0, 16, 256});
  std::vector<int32_t> a = ids, b = ids;
  const std::vector<int32_t> tail_a = tok.encode(" jumps over"), tail_b = tok.encode(" sleeps");
  a.insert(a.end(), tail_a.begin(), tail_a.end());
  b.insert(b.end(), tail_b.begin(), tail_b.end());
  size_t common = 0;
  while (a[common] == b[common]) ++common;
  const auto sa = fresh.submit(SequenceRequest{a, options[0]});
  const auto sb = fresh.submit(SequenceRequest{b, options[0]});
  drain(*sa);
  const std::string tb = drain(*sb);
  EXPECT_EQ(fresh.metrics().prompt_tokens_cached, int64_t(common));
  EXPECT_EQ(tok.decode(std::vector<int32_t>(b.begin() + 1, b.end())) + tb,
            generate_text(m.cfg, m.params, tok, tok.decode(std::vector<int32_t>(b.begin() + 1, b.end())), options[0]));
}

TEST(Scheduler, KeptCachesGiveWayToRunningOnesWithinTheBudget) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  GenerateOptions greedy;
  greedy.max_tokens = 30;
  greedy.ignore_eos = true;
  greedy.sampler = SamplerOptions{0.0, 0, 1.0, 1};
  // One sequence of at most 48 positions: 48 in the budget.
  Scheduler sched(m.cfg, DecoderWeights<float>::of(m.params), tok, SchedulerOptions{1, 48, 16, 256});
  const std::vector<int32_t> a = tok.encode_prompt("Line 3: the quick brown fox"), b = tok.encode_prompt("the lazy dog");
  drain(*sched.submit(SequenceRequest{a, greedy}));
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(a.size()) + 30);
  // b needs its own 30 + positions beside a's: a's cache goes.
  const auto s = sched.submit(SequenceRequest{b, greedy});
  std::string piece;
  s->next(piece);
  const SchedulerMetrics running = sched.metrics();
  EXPECT_LE(running.kv_positions_in_use + running.kv_positions_kept, 48);
  drain(*s);
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(b.size()) + 30);
  // Starting from b's cache: its prompt and 29 generated tokens.
  std::vector<int32_t> c = b;
  c.insert(c.end(), s->generated().begin(), s->generated().end());
  GenerateOptions few = greedy;
  few.max_tokens = 4;
  ASSERT_LE(int64_t(c.size()) + 4, 48);
  drain(*sched.submit(SequenceRequest{c, few}));
  EXPECT_EQ(sched.metrics().prompt_tokens_cached, int64_t(b.size()) + 29);
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(c.size()) + 4);
  // A sequence that ends well short of its room (a stop string) is kept at what it holds.
  GenerateOptions stops = greedy;
  stops.max_tokens = 40;
  stops.ignore_eos = false;
  stops.stop = {" "};
  const std::vector<int32_t> d = tok.encode_prompt("Line 5");
  const auto ds = sched.submit(SequenceRequest{d, stops});
  drain(*ds);
  ASSERT_EQ(ds->stats().stopped, GenerateStats::Stop::stop_string);
  ASSERT_LT(ds->generated().size(), 30u);
  EXPECT_EQ(sched.metrics().kv_positions_kept, int64_t(d.size() + ds->generated().size()) - 1);
}

TEST(ServeApi, RequestChecksNameTheFieldAndStatus) {
  const ApiLimits limits{"tiny", 128, 4};
  auto status_of = [&](const std::string& body, bool chat = false) {
    try {
      chat ? parse_chat_request(body, limits) : parse_completion_request(body, limits);
    } catch (const ApiError& e) {
      return std::make_pair(e.status(), e.body()["error"]["param"].is_null() ? std::string() : e.body()["error"]["param"].get<std::string>());
    }
    return std::make_pair(200, std::string());
  };
  EXPECT_EQ(status_of("{nope"), std::make_pair(400, std::string()));
  EXPECT_EQ(status_of("1e309"), std::make_pair(400, std::string()));  // out of double's range (found by fuzz/request)
  EXPECT_EQ(status_of(R"({"prompt": "x", "temperature": 1e400})"), std::make_pair(400, std::string()));
  EXPECT_EQ(status_of(R"({"prompt": "x", "temperature": "hot"})"), std::make_pair(400, std::string("temperature")));
  EXPECT_EQ(status_of(R"({"model": "other", "prompt": "x"})"), std::make_pair(404, std::string("model")));
  EXPECT_EQ(status_of(R"({"max_tokens": 3})"), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "max_tokens": -2})"), std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "max_tokens": 128})"), std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "top_p": 0})"), std::make_pair(400, std::string("top_p")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "n": 5})"), std::make_pair(400, std::string("n")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "logprobs": 6})"), std::make_pair(400, std::string("logprobs")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "stop": ["a", ""]})"), std::make_pair(400, std::string("stop")));
  std::string stops = R"({"prompt": "x", "stop": ["s0")";
  for (int i = 1; i < 16; ++i) stops += ", \"s" + std::to_string(i) + "\"";
  EXPECT_EQ(status_of(stops + "]}").first, 200);  // 16, more than OpenAI's 4, as harnesses send them
  EXPECT_EQ(status_of(stops + R"(, "s16"]})"), std::make_pair(400, std::string("stop")));
  EXPECT_EQ(status_of(R"({"messages": []})", true), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(status_of(R"({"messages": [{"role": "robot", "content": "x"}]})", true),
            std::make_pair(400, std::string("messages")));
  EXPECT_EQ(status_of(R"({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 127, "n": 4, "stop": "x"})").first, 200);
  // Batches of prompts (as evaluation harnesses send them): strings, or token-id lists.
  EXPECT_EQ(status_of(R"({"prompt": [[1, 2], "x"]})"), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(status_of(R"({"prompt": [[]]})"), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(status_of(R"({"prompt": []})"), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(status_of(R"({"prompt": [[1, -2]]})"), std::make_pair(400, std::string("prompt")));
  const ApiRequest batch = parse_completion_request(R"({"prompt": [[1, 2], [3]], "n": 2})", limits);
  ASSERT_EQ(batch.prompts.size(), 2u);
  EXPECT_EQ(batch.prompts[0].ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(batch.prompts[1].ids, (std::vector<int32_t>{3}));
  const ApiRequest texts = parse_completion_request(R"({"prompt": ["a", "b", "c"]})", limits);
  ASSERT_EQ(texts.prompts.size(), 3u);
  EXPECT_EQ(texts.prompts[2].text, "c");
  EXPECT_TRUE(texts.prompts[2].ids.empty());
  std::string many = R"({"n": 2, "prompt": [)";
  for (int i = 0; i < 41; ++i) many += std::string(i ? ", " : "") + "[1, 2]";
  EXPECT_EQ(status_of(many + "]}"), std::make_pair(400, std::string("prompt")));  // 82 sequences of 80
  EXPECT_EQ(status_of(R"({"n": 2, "prompt": [[1], [2], [3], [4], [5], [6], [7], [8], [9], [10]]})").first, 200);
  const ApiRequest r = parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true,
                                              "top_logprobs": 2, "seed": 9, "temperature": 0})",
                                          limits);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.sampler.seed, 9u);
  EXPECT_EQ(r.sampler.temperature, 0.0);
  // Penalties and logit biases (OpenAI's; llama.cpp's repeat penalty).
  EXPECT_EQ(status_of(R"({"prompt": "x", "presence_penalty": 2.5})"), std::make_pair(400, std::string("presence_penalty")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "frequency_penalty": "a"})"), std::make_pair(400, std::string("frequency_penalty")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "repeat_penalty": 0})"), std::make_pair(400, std::string("repeat_penalty")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "min_p": 1.5})"), std::make_pair(400, std::string("min_p")));
  // What the server does not do is refused, the defaults pass.
  EXPECT_EQ(status_of(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
                      true),
            std::make_pair(400, std::string("response_format")));
  EXPECT_EQ(status_of(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", true),
            std::make_pair(400, std::string("tools")));
  EXPECT_EQ(status_of(R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"})", true),
            std::make_pair(400, std::string("tool_choice")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "n": 2, "best_of": 3})"), std::make_pair(400, std::string("best_of")));
  EXPECT_EQ(status_of(R"({"prompt": "x", "suffix": "y"})"), std::make_pair(400, std::string("suffix")));
  EXPECT_EQ(status_of(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"},
                          "tools": [], "tool_choice": "none"})",
                      true)
                .first,
            200);
  EXPECT_EQ(status_of(R"({"prompt": "x", "n": 2, "best_of": 2, "suffix": ""})").first, 200);
  EXPECT_EQ(status_of(R"({"prompt": "x", "repeat_last_n": -2})"), std::make_pair(400, std::string("repeat_last_n")));
  for (const char* bias : {R"([1, 2])", R"({"x": 1})", R"({"-1": 1})", R"({"5": 101})", R"({"5": "a"})"})
    EXPECT_EQ(status_of(std::string(R"({"prompt": "x", "logit_bias": )") + bias + "}"),
              std::make_pair(400, std::string("logit_bias")))
        << bias;
  const ApiRequest p = parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": -1,
                                              "frequency_penalty": 0.5, "logit_bias": {"7": -100, "12": 2.5},
                                              "repeat_penalty": 1.1, "repeat_last_n": -1, "min_p": 0.05})",
                                          limits);
  EXPECT_EQ(p.presence_penalty, -1.0);
  EXPECT_EQ(p.frequency_penalty, 0.5);
  std::vector<std::pair<int32_t, float>> biases = p.logit_bias;
  std::sort(biases.begin(), biases.end());
  EXPECT_EQ(biases, (std::vector<std::pair<int32_t, float>>{{7, -100.0f}, {12, 2.5f}}));
  EXPECT_EQ(p.repeat_penalty, 1.1);
  EXPECT_EQ(p.repeat_last_n, 128);  // -1: the context
  EXPECT_EQ(p.sampler.min_p, 0.05);
}

// vLLM's tokenizer endpoints (serve/tokenizer_api.h), against the tokenizer itself: BOS
// with add_special_tokens, the BOS and EOS pieces in a text as those tokens, decode back.
TEST(ServeApi, TokenizerEndpointsAreTheTokenizers) {
  const Tokenizer& tok = tokenizer();
  const std::string text = "Line 5: the quick brown fox";
  auto ids_of = [](const nlohmann::json& j) { return j["tokens"].get<std::vector<int32_t>>(); };
  EXPECT_EQ(ids_of(tokenize_request(tok, R"({"prompt": "Line 5: the quick brown fox"})", 128)), tok.encode_prompt(text));
  EXPECT_EQ(ids_of(tokenize_request(tok, R"({"prompt": "Line 5: the quick brown fox", "add_special_tokens": false})",
                                    128)),
            tok.encode(text));
  const std::string eos = tok.piece(tok.eos_id());
  std::vector<int32_t> want = tok.encode("Line 5");
  want.push_back(tok.eos_id());
  const std::vector<int32_t> after = tok.encode("the fox");
  want.insert(want.end(), after.begin(), after.end());
  const nlohmann::json body = {{"prompt", "Line 5" + eos + "the fox"}, {"add_special_tokens", false}};
  EXPECT_EQ(ids_of(tokenize_request(tok, body.dump(), 128)), want);
  const nlohmann::json ids = {{"tokens", tok.encode(text)}};
  EXPECT_EQ(detokenize_request(tok, ids.dump())["prompt"], text);
  EXPECT_EQ(tokenizer_info(tok, 128)["eos_token"], eos);
  auto param_of = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const ApiError& e) {
      return std::make_pair(e.status(), e.body()["error"]["param"].get<std::string>());
    }
    return std::make_pair(200, std::string());
  };
  EXPECT_EQ(param_of([&] { tokenize_request(tok, R"({"prompt": 5})", 128); }), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(param_of([&] { detokenize_request(tok, R"({"tokens": [1, 99999]})"); }),
            std::make_pair(400, std::string("tokens")));
  EXPECT_EQ(param_of([&] { detokenize_request(tok, R"({"tokens": "x"})"); }), std::make_pair(400, std::string("tokens")));
}

// A character the tokenizer has no piece for comes as byte-fallback tokens, one byte each:
// decoded alone, its first bytes read as U+FFFD, and the text gets shorter when the last
// byte arrives. What take_text hands out must never include the partial character.
TEST(Generation, ACharacterSplitAcrossTokensIsShownWhole) {
  const TinyModel m;
  const Tokenizer& tok = tokenizer();
  const std::vector<int32_t> bytes = tok.encode("\xE4\xB8\xAD");  // U+4E2D, not in the corpus
  ASSERT_GE(bytes.size(), 3u) << "expected byte-fallback pieces";
  GenerateOptions o;
  o.max_tokens = int(bytes.size()) + 2;
  o.sampler = SamplerOptions{0.0, 0, 1.0, 1};  // greedy: the one-hot logits below decide
  Generation gen(m.cfg, tok, tok.encode_prompt("Line 1"), o);
  std::vector<float> logits(static_cast<size_t>(m.cfg.vocab_size), 0.0f);
  std::string shown;
  std::vector<int32_t> wanted = bytes;
  const int32_t x = tok.encode("x").back();
  wanted.push_back(x);
  for (int32_t id : wanted) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    logits[size_t(id)] = 100.0f;
    ASSERT_TRUE(gen.step(logits.data()).has_value());
    const std::string piece = gen.take_text();
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a partial character was shown";
    shown += piece;
  }
  shown += gen.take_text();
  EXPECT_NE(gen.continuation().find("\xE4\xB8\xAD"), std::string::npos) << gen.continuation();
  EXPECT_TRUE(gen.continuation().rfind(shown, 0) == 0) << "shown '" << shown << "' vs '" << gen.continuation() << "'";
}
