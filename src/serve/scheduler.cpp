#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>

#include "core/affinity.h"
#include "core/error.h"
#include "core/parallel.h"
#include "model/kv_cache.h"

namespace moepp {

// ---- Stream ----

bool Stream::next(std::string& text) {
  while (true) {
    const Poll got = poll(text, std::chrono::hours(1));
    if (got != Poll::nothing) return got == Poll::text;
  }
}

Stream::Poll Stream::poll(std::string& text, std::chrono::milliseconds wait, std::vector<TokenLogprob>* logprobs) {
  std::unique_lock<std::mutex> lock(mu_);
  auto news = [&] { return !pending_.empty() || (logprobs && !pending_logprobs_.empty()); };
  cv_.wait_for(lock, wait, [&] { return news() || ended_; });
  if (news()) {
    text = std::move(pending_);
    pending_.clear();
    if (logprobs) {
      *logprobs = std::move(pending_logprobs_);
      pending_logprobs_.clear();
    }
    return Poll::text;
  }
  return ended_ ? Poll::ended : Poll::nothing;
}

void Stream::push(std::string text, std::vector<TokenLogprob> logprobs) {
  if (text.empty() && logprobs.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ += text;
    for (auto& t : logprobs) pending_logprobs_.push_back(std::move(t));
  }
  cv_.notify_all();
}

void Stream::finish(const Generation* gen, std::string error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gen) {
      stats_ = gen->stats();
      generated_ = gen->generated();
      logprobs_ = gen->logprobs();
    }
    error_ = std::move(error);
    ended_ = true;
  }
  cv_.notify_all();
}

// ---- Scheduler ----

struct Scheduler::Running {
  SequenceRequest request;
  std::shared_ptr<Stream> stream;
  std::unique_ptr<Generation> generation;
  std::unique_ptr<KvCache<float>> cache;
  size_t fed = 0;                    // prompt tokens already in the cache
  std::optional<int32_t> next;       // the token to feed at the next step
  std::vector<TokenLogprob> prompt_logprobs;
  // A running sequence whose prompt begins with this one's first prefix_length tokens (a
  // request's first choice; another user of one system prompt): this one waits for its
  // prefill of them, then copies them.
  Running* prefix_from = nullptr;
  size_t prefix_length = 0;
  size_t logprobs_pushed = 0;  // generated tokens' log-probabilities handed to the stream

  // A sequence that starts from a copied prefix: when scored, it takes the first n of its
  // source's prompt log-probabilities, top lists cut to its own k (most likely first).
  void take_scores(const std::vector<TokenLogprob>& from, size_t n) {
    const int k = request.prompt_logprobs;
    if (k < 0) return;
    for (size_t i = 0; i < n; ++i) {
      TokenLogprob t = from[i];
      t.top.resize(std::min(t.top.size(), size_t(k)));
      prompt_logprobs.push_back(std::move(t));
    }
  }

  // The text that became safe to show, with the log-probabilities of the tokens generated
  // since the last call (under the tokenizer lock).
  void push_news() {
    const std::vector<TokenLogprob>& all = generation->logprobs();
    std::vector<TokenLogprob> fresh(all.begin() + std::ptrdiff_t(logprobs_pushed), all.end());
    logprobs_pushed = all.size();
    stream->push(generation->take_text(), std::move(fresh));
  }
};

// The fewest shared tokens worth starting from a kept cache. Every prompt shares its BOS
// (and many a first word) with every kept sequence; a few rows of a step are not worth
// leaving a fresh prefill's arithmetic for (a copied prefix was computed in another
// batch, whose sums may round differently: docs/serve.md, "The prompt cache").
constexpr size_t kMinCachedPrefix = 16;

// How many leading tokens a and b share, at most `most`.
size_t shared_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b, size_t most) {
  most = std::min({most, a.size(), b.size()});
  return size_t(std::mismatch(a.begin(), a.begin() + std::ptrdiff_t(most), b.begin()).first - a.begin());
}

struct Scheduler::Kept {
  std::vector<int32_t> tokens;  // what the cache's positions hold
  std::unique_ptr<KvCache<float>> cache;
  uint64_t last_used = 0;
  // A scored sequence's: its prompt tokens' log-probabilities (entry i: token i + 1), with
  // top lists of top_k (-1: not scored).
  std::vector<TokenLogprob> prompt_logprobs;
  int top_k = -1;
};

Scheduler::Scheduler(const ModelConfig& cfg, DecoderWeights<float> weights, const Tokenizer& tok, SchedulerOptions opt)
    : cfg_(cfg), weights_(std::move(weights)), tok_(tok), opt_(opt) {
  MOEPP_CHECK(opt_.max_seqs >= 1, "serve: --max-seqs must be at least 1, got ", opt_.max_seqs);
  MOEPP_CHECK(opt_.max_queue >= 0, "serve: the queue bound must be 0 or more, got ", opt_.max_queue);
  MOEPP_CHECK(opt_.ctx >= 0 && opt_.ctx <= cfg.max_position_embeddings, "serve: --ctx ", opt_.ctx,
              " is outside what the model holds (1 to ", cfg.max_position_embeddings, ")");
  MOEPP_CHECK(opt_.prefill_chunk >= 1, "serve: the prefill chunk must be at least 1 token");
  ctx_ = opt_.ctx > 0 ? opt_.ctx : cfg.max_position_embeddings;
  kv_budget_ = ctx_ * opt_.max_seqs;
  kv_bytes_per_position_ = KvCache<float>::bytes_per_position(cfg, opt_.kv_dtype);
  // The decoder runs on the worker's own OpenMP team. A new thread starts from the
  // runtime's defaults, not from the --threads its creator set, so the count is carried
  // over; and the team is pinned one thread a CPU (core/affinity.h), so that the request
  // threads, which may run anywhere, never leave two of its spinning threads on one CPU.
  // (With OMP_PROC_BIND=true instead, the runtime binds the main thread to the first CPU,
  // every request thread inherits that, and a 16-client load ran its steps ~1.6x slower.)
  // The creating thread's idle workers (from loading the model) are ended first: with them
  // beside the worker's team, libgomp manages more threads than CPUs and throttles its
  // spinning (core/parallel.h), which cost a 16-client load a third of its throughput.
  const int threads = max_threads();
  release_idle_threads();
  worker_ = std::thread([this, threads] {
    set_threads(threads);
    pin_threads_to_cpus();
    {
      std::lock_guard<std::mutex> lock(mu_);
      metrics_.decoder_threads = max_threads();
    }
    loop();
  });
}

Scheduler::~Scheduler() {
  quit_ = true;
  cancel_all_ = true;
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::shared_ptr<Stream> Scheduler::submit(SequenceRequest request) {
  std::vector<SequenceRequest> one;
  one.push_back(std::move(request));
  return submit_all(std::move(one)).front();
}

std::vector<std::shared_ptr<Stream>> Scheduler::submit_all(std::vector<SequenceRequest> requests) {
  MOEPP_CHECK(admitting_, "serve: the server is shutting down");
  std::vector<std::unique_ptr<Running>> batch;
  std::vector<std::shared_ptr<Stream>> streams;
  for (SequenceRequest& request : requests) {
    auto r = std::make_unique<Running>();
    request.options.context = std::min<int64_t>(request.options.context > 0 ? request.options.context : ctx_, ctx_);
    {
      std::lock_guard<std::mutex> lock(tok_mu_);
      r->generation = std::make_unique<Generation>(cfg_, tok_, request.prompt, request.options, request.top_logprobs);
    }
    r->request = std::move(request);
    r->stream = std::make_shared<Stream>();
    streams.push_back(r->stream);
    batch.push_back(std::move(r));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t room = opt_.max_queue + opt_.max_seqs - metrics_.running - int64_t(queue_.size());
    if (int64_t(batch.size()) > room)
      throw QueueFull("serve: " + std::to_string(queue_.size()) + " sequences are waiting (the bound is " +
                      std::to_string(opt_.max_queue) + " beyond the running batch); this request holds " +
                      std::to_string(batch.size()));
    for (auto& r : batch) queue_.push_back(std::move(r));
    metrics_.queued = int64_t(queue_.size());
  }
  cv_.notify_all();
  return streams;
}

void Scheduler::cancel_all() {
  cancel_all_ = true;
  cv_.notify_all();
}

bool Scheduler::idle() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.empty() && metrics_.running == 0;
}

SchedulerMetrics Scheduler::metrics() {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

void Scheduler::loop() {
  std::vector<std::unique_ptr<Running>> running;
  while (true) {
    admit(running);
    if (cancel_all_) {
      while (!running.empty()) retire(running, running.size() - 1, "cancelled: the server is shutting down");
      std::unique_lock<std::mutex> lock(mu_);
      for (auto& r : queue_) r->stream->finish(nullptr, "cancelled: the server is shutting down");
      queue_.clear();
      metrics_.queued = 0;
      if (quit_) return;
      cancel_all_ = false;
      continue;
    }
    for (size_t i = running.size(); i-- > 0;)
      if (running[i]->stream->cancelled()) retire(running, i, "cancelled by the client");
    if (running.empty()) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return !queue_.empty() || quit_ || cancel_all_; });
      if (quit_ && queue_.empty()) return;
      continue;
    }
    step_once(running);
  }
}

void Scheduler::admit(std::vector<std::unique_ptr<Running>>& running) {
  std::lock_guard<std::mutex> lock(mu_);
  while (!queue_.empty() && int(running.size()) < opt_.max_seqs) {
    auto& r = queue_.front();
    const int64_t need = r->generation->capacity();
    if (!running.empty() && kv_in_use_ + need > kv_budget_) break;  // waits for memory
    if (r->stream->cancelled()) {
      r->stream->finish(nullptr, "cancelled by the client");
      queue_.pop_front();
      continue;
    }
    int64_t shared = 0;
    const Kept* source = opt_.prompt_cache && r->request.cache_prompt
                             ? longest_kept_prefix(r->request.prompt, r->request.prompt_logprobs, shared)
                             : nullptr;
    evict_kept(kv_in_use_ + need, source);  // room for the new cache; the source stays while it is read
    try {
      r->cache = std::make_unique<KvCache<float>>(cfg_, need, opt_.kv_dtype);
    } catch (const std::exception& e) {
      r->stream->finish(nullptr, std::string("serve: cannot allocate the KV cache: ") + e.what());
      queue_.pop_front();
      continue;
    }
    if (opt_.prompt_cache && r->request.cache_prompt && r->request.prompt.size() > kMinCachedPrefix) {
      // A running sequence whose prompt begins alike, further than any kept cache (a
      // request's n choices; a burst of users of one system prompt; a context sent with
      // each of its continuations to be scored): its prefill of the shared tokens is
      // copied, at the step where it is there. A scored prompt takes, as from a kept
      // cache, only a scored sequence's, with top lists as long, and one position less.
      const std::vector<int32_t>& prompt = r->request.prompt;
      const int scored = r->request.prompt_logprobs;
      size_t longest = std::max(size_t(shared), kMinCachedPrefix - 1);
      for (const auto& lead : running) {
        if (lead->prefix_from || !lead->request.cache_prompt) continue;  // a waiting one has nothing to give
        if (scored > lead->request.prompt_logprobs) continue;
        size_t n = shared_prefix(lead->request.prompt, prompt, prompt.size() - 1);
        if (scored >= 0 && n > 0) --n;
        if (n > longest) {
          longest = n;
          r->prefix_from = lead.get();
          r->prefix_length = n;
        }
      }
      if (r->prefix_from) source = nullptr;
    }
    if (source) {
      r->cache->copy_prefix(*source->cache, shared);
      r->fed = size_t(shared);
      metrics_.prompt_tokens_cached += shared;
      // A scored prompt takes the log-probabilities of the tokens it did not run.
      r->take_scores(source->prompt_logprobs, size_t(shared));
    }
    kv_in_use_ += need;
    evict_kept(kv_in_use_, nullptr);
    metrics_.tokens_in += int64_t(r->request.prompt.size());
    running.push_back(std::move(r));
    queue_.pop_front();
  }
  metrics_.queued = int64_t(queue_.size());
  metrics_.running = int64_t(running.size());
  publish_kv_metrics();
}

Scheduler::Kept* Scheduler::longest_kept_prefix(const std::vector<int32_t>& prompt, int scored, int64_t& shared) {
  // At most all but the prompt's last token: that one runs, for the logits of the next.
  const size_t limit = prompt.empty() ? 0 : prompt.size() - 1;
  Kept* best = nullptr;
  size_t best_n = kMinCachedPrefix - 1;
  for (const auto& k : kept_) {
    if (scored > k->top_k) continue;  // a scored prompt needs the skipped tokens' log-probabilities
    size_t n = shared_prefix(k->tokens, prompt, limit);
    // Scored: one position less. The kept sequence scored the shared tokens up to the last
    // (n - 1); that one runs again, for the logits that score the first token not shared.
    // And no further than the kept sequence's scored prompt.
    if (scored >= 0) n = std::min(n == 0 ? 0 : n - 1, k->prompt_logprobs.size());
    if (n > best_n || (n == best_n && best && k->last_used > best->last_used)) {
      best = k.get();
      best_n = n;
    }
  }
  shared = best ? int64_t(best_n) : 0;
  if (best) best->last_used = ++use_clock_;
  return best;
}

void Scheduler::keep(Running& r) {
  if (!opt_.prompt_cache || !r.request.cache_prompt || !r.cache || r.cache->length() == 0) return;
  const std::vector<int32_t>& prompt = r.request.prompt;
  const std::vector<int32_t>& generated = r.generation->generated();
  const size_t length = size_t(r.cache->length());
  // The cache holds the prompt, then the generated tokens fed back (all but the last).
  if (length < prompt.size() || length - prompt.size() > generated.size()) return;
  auto k = std::make_unique<Kept>();
  k->tokens = prompt;
  k->tokens.insert(k->tokens.end(), generated.begin(), generated.begin() + std::ptrdiff_t(length - prompt.size()));
  // Cut to the positions it holds where it had room for a quarter more (a chat without
  // max_tokens had room for the whole context); the copy costs ~1 ms for 500 positions.
  if (r.cache->capacity() - int64_t(length) > int64_t(length) / 4) {
    try {
      k->cache = std::make_unique<KvCache<float>>(cfg_, int64_t(length), opt_.kv_dtype);
    } catch (const std::exception&) {
      return;  // kept nothing: the memory was not there
    }
    k->cache->copy_prefix(*r.cache, int64_t(length));
  } else {
    k->cache = std::move(r.cache);
  }
  k->last_used = ++use_clock_;
  if (r.request.prompt_logprobs >= 0 && r.prompt_logprobs.size() + 1 == prompt.size()) {
    k->prompt_logprobs = r.prompt_logprobs;
    k->top_k = r.request.prompt_logprobs;
  }
  // A kept cache whose tokens begin this one's adds nothing beside it (unless it holds
  // log-probabilities this one lacks).
  for (size_t i = kept_.size(); i-- > 0;) {
    const Kept& old = *kept_[i];
    const auto& t = old.tokens;
    const bool scores_no_more = old.top_k < 0 || (old.top_k <= k->top_k &&
                                                  old.prompt_logprobs.size() <= k->prompt_logprobs.size());
    if (scores_no_more && t.size() <= k->tokens.size() && std::equal(t.begin(), t.end(), k->tokens.begin())) {
      kept_positions_ -= kept_[i]->cache->capacity();
      kept_.erase(kept_.begin() + std::ptrdiff_t(i));
    }
  }
  kept_positions_ += k->cache->capacity();
  kept_.push_back(std::move(k));
  evict_kept(kv_in_use_, nullptr);
}

// Drops kept caches, the least recently used first (`spare` last of all, never), while
// they and `running_positions` exceed the KV budget or more than --max-seqs are kept.
void Scheduler::evict_kept(int64_t running_positions, const Kept* spare) {
  while (running_positions + kept_positions_ > kv_budget_ || int64_t(kept_.size()) > opt_.max_seqs) {
    auto victim = kept_.end();
    for (auto it = kept_.begin(); it != kept_.end(); ++it)
      if (it->get() != spare && (victim == kept_.end() || (*it)->last_used < (*victim)->last_used)) victim = it;
    if (victim == kept_.end()) return;
    kept_positions_ -= (*victim)->cache->capacity();
    kept_.erase(victim);
  }
}

void Scheduler::take_lead_prefix(Running& r) {
  const Running* lead = r.prefix_from;
  const size_t n = r.prefix_length;
  const int scored = r.request.prompt_logprobs;
  if (!lead || lead->fed < n || (scored >= 0 && lead->prompt_logprobs.size() < n)) return;
  r.cache->copy_prefix(*lead->cache, int64_t(n));
  r.fed = n;
  r.prefix_from = nullptr;
  r.take_scores(lead->prompt_logprobs, n);
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.prompt_tokens_cached += int64_t(n);
}

void Scheduler::publish_kv_metrics() {
  metrics_.kv_positions_in_use = kv_in_use_;
  metrics_.kv_bytes_in_use = kv_in_use_ * kv_bytes_per_position_;
  metrics_.kv_positions_kept = kept_positions_;
  metrics_.kv_bytes_kept = kept_positions_ * kv_bytes_per_position_;
}

void Scheduler::retire(std::vector<std::unique_ptr<Running>>& running, size_t i, const std::string& error) {
  std::unique_ptr<Running> owned = std::move(running[i]);
  Running& r = *owned;
  running.erase(running.begin() + std::ptrdiff_t(i));
  for (auto& other : running)
    if (other->prefix_from == &r) {
      take_lead_prefix(*other);     // if r's prefill is there
      other->prefix_from = nullptr;  // else it prefills its prompt itself
    }
  kv_in_use_ -= r.generation->capacity();
  if (error.empty()) keep(r);
  {
    // Published before the stream ends, so a client that has read its last text sees the
    // scheduler idle (and its KV memory free) if nothing else runs.
    std::lock_guard<std::mutex> lock(mu_);
    metrics_.running = int64_t(running.size());
    publish_kv_metrics();
  }
  if (error.empty()) {
    std::lock_guard<std::mutex> lock(tok_mu_);
    r.push_news();
  } else {
    r.generation->cancel();
  }
  {
    std::lock_guard<std::mutex> lock(r.stream->mu_);
    r.stream->prompt_logprobs_ = std::move(r.prompt_logprobs);
  }
  r.stream->finish(r.generation.get(), error);
}

void Scheduler::step_once(std::vector<std::unique_ptr<Running>>& running) {
  for (auto& r : running) take_lead_prefix(*r);  // those whose shared prefill is there
  std::vector<SequenceStep<float>> steps;
  std::vector<size_t> owner;
  std::vector<bool> prefill;
  int64_t budget = opt_.prefill_chunk;
  bool all_rows = false;
  for (size_t i = 0; i < running.size(); ++i) {
    Running& r = *running[i];
    const auto& prompt = r.request.prompt;
    if (r.prefix_from) continue;  // waits for another's prefill of its prompt's beginning
    if (r.fed < prompt.size()) {
      int64_t n = int64_t(prompt.size() - r.fed);
      if (r.request.prompt_logprobs >= 0) {
        // Scored prompts go in whole, so every row's logits are there to score the next token.
        if (n > budget && budget < opt_.prefill_chunk) continue;
        all_rows = true;
      } else {
        n = std::min(n, budget);
      }
      if (n <= 0) continue;
      budget -= n;
      steps.push_back({r.cache.get(), prompt.data() + r.fed, n});
      prefill.push_back(true);
    } else if (r.next) {
      steps.push_back({r.cache.get(), &*r.next, 1});
      prefill.push_back(false);
    } else {
      continue;
    }
    owner.push_back(i);
  }
  if (steps.empty()) return;
  try {
    decoder_step(cfg_, weights_, std::span<const SequenceStep<float>>(steps), scratch_, logits_,
                 all_rows ? LogitRows::all : LogitRows::last);
  } catch (const std::exception& e) {
    for (size_t j = owner.size(); j-- > 0;) retire(running, owner[j], std::string("serve: the decoder failed: ") + e.what());
    return;
  }
  const int64_t V = cfg_.vocab_size;
  std::vector<size_t> done;
  std::vector<std::string> errors;
  int64_t row = 0, rows = 0, produced = 0;
  for (size_t j = 0; j < steps.size(); ++j) {
    Running& r = *running[owner[j]];
    const int64_t n = steps[j].n;
    const int64_t last = all_rows ? row + n - 1 : int64_t(j);
    rows += n;
    if (prefill[j]) {
      if (r.request.prompt_logprobs >= 0) {
        // Row p of this chunk predicts prompt token fed + p + 1.
        for (int64_t p = 0; p + 1 < n; ++p)
          r.prompt_logprobs.push_back(token_logprob(logits_.data() + (row + p) * V, V,
                                                    r.request.prompt[r.fed + size_t(p) + 1], r.request.prompt_logprobs));
      }
      r.fed += size_t(n);
    }
    row += n;
    if (r.fed < r.request.prompt.size()) continue;  // more prompt to come
    if (r.generation->finished()) {  // max_tokens 0: the prompt was all there was to run (scoring)
      done.push_back(owner[j]);
      errors.emplace_back();
      continue;
    }
    try {
      std::optional<int32_t> next;
      {
        std::lock_guard<std::mutex> lock(tok_mu_);
        next = r.generation->step(logits_.data() + last * V);
        r.push_news();
      }
      ++produced;
      if (!next || r.generation->finished()) {
        done.push_back(owner[j]);
        errors.emplace_back();
      } else {
        r.next = next;
      }
    } catch (const std::exception& e) {
      done.push_back(owner[j]);
      errors.emplace_back(e.what());
    }
  }
  // Routing over a window of 64 steps: FFN experts per token, per layer and overall.
  if (window_.empty()) window_ = scratch_.routing;
  else
    for (size_t l = 0; l < window_.size() && l < scratch_.routing.size(); ++l) window_[l].add(scratch_.routing[l]);
  ++window_steps_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    metrics_.steps += 1;
    metrics_.step_rows += rows;
    metrics_.tokens_out += produced;
    metrics_.last_batch_size = double(steps.size());
    if (window_steps_ >= 64 || metrics_.ffn_per_token_by_layer.empty()) {
      metrics_.ffn_per_token_by_layer.clear();
      RoutingStats all;
      for (const auto& s : window_) {
        metrics_.ffn_per_token_by_layer.push_back(s.ffn_experts_per_token());
        all.add(s);
      }
      metrics_.ffn_per_token = all.ffn_experts_per_token();
    }
  }
  if (window_steps_ >= 64) {
    window_.clear();
    window_steps_ = 0;
  }
  for (size_t k = done.size(); k-- > 0;) retire(running, done[k], errors[k]);
}

}  // namespace moepp
