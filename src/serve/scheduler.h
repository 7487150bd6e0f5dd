// The serving scheduler: continuous batching over the decoder step (model/decoder.h).
//
// Requests wait in a bounded queue; at every token boundary the scheduler admits waiting
// sequences while the running set stays within --max-seqs and the KV budget (the sum of
// the running sequences' cache capacities, in positions), then runs one decoder step over
// all running sequences: each decoding sequence contributes its last token, and sequences
// still prefilling contribute a chunk of their prompt (at most `prefill_chunk` prompt
// tokens per step in all, so long prompts never stall the others' decoding). Each sequence's
// Generation (infer/generation.h) turns its logits row into the next token and text, which
// reach the request's Stream. A cancelled stream (a client that went away) is dropped at
// the next step and its cache freed. One worker thread owns the model, the caches and the
// scratch; request threads only touch their Stream and the queue.
//
// The prompt cache: a sequence that finishes leaves its cache behind, with the tokens it
// holds (its prompt and what it generated), and a later prompt that begins with some of
// those tokens (16 or more) starts from a copy of their keys and values, prefilling only
// the rest (a chat's next turn resends the whole conversation). Kept caches share the KV budget with
// the running ones and give way to them, the least recently used first; at most
// --max-seqs are kept. Prompts running together share their common beginning the same
// way: a request's n choices, or users of one system prompt, wait for the first one's
// prefill of it and copy it.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"
#include "infer/generation.h"
#include "infer/generator.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/decoder_weights.h"
#include "moe/routing_stats.h"

namespace moepp {

struct SchedulerOptions {
  int max_seqs = 16;          // sequences decoding together
  int64_t ctx = 0;            // positions per sequence (0: the model's max_position_embeddings)
  int max_queue = 64;         // waiting sequences beyond which submit() refuses
  int64_t prefill_chunk = 256;  // prompt tokens per step over all prefilling sequences
  KvDtype kv_dtype = KvDtype::f32;  // the sequences' KV caches (model/kv_cache.h)
  bool prompt_cache = true;   // keep finished sequences' caches for the prompts that begin alike
};

// One sequence to generate: its prompt ids (BOS included where wanted) and options.
struct SequenceRequest {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  int top_logprobs = -1;        // >= 0: log-probabilities of the generated tokens (k alternatives)
  int prompt_logprobs = -1;     // >= 0: also of the prompt tokens (echo); the prompt is prefilled in one step
  bool cache_prompt = true;     // may start from a kept cache's prefix, and leaves its own cache to be kept
};

// What a request thread reads: text as it becomes safe to show, then the end.
class Stream {
 public:
  // Blocks until there is new text or the sequence ended; returns false once it ended and
  // everything was read (then error() / stats() are final).
  bool next(std::string& text);
  // Waits up to `wait` for new text: text (into `text`), nothing yet, or ended (everything
  // read). Lets one reader follow several streams (the n choices of a request). With
  // `logprobs` (a sequence asked for them: top_logprobs >= 0), the log-probabilities of the
  // tokens generated since the last poll count as news too and go there (their text may
  // still be held back: a stop string's beginning, part of a character).
  enum class Poll { text, nothing, ended };
  Poll poll(std::string& text, std::chrono::milliseconds wait, std::vector<TokenLogprob>* logprobs = nullptr);
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  const std::string& error() const { return error_; }
  const GenerateStats& stats() const { return stats_; }
  const std::vector<int32_t>& generated() const { return generated_; }
  const std::vector<TokenLogprob>& logprobs() const { return logprobs_; }
  // logprobs of prompt[1..]: prompt token p given the tokens before it (the first has none)
  const std::vector<TokenLogprob>& prompt_logprobs() const { return prompt_logprobs_; }

 private:
  friend class Scheduler;
  void push(std::string text, std::vector<TokenLogprob> logprobs = {});
  void finish(const Generation* gen, std::string error);

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  std::vector<TokenLogprob> pending_logprobs_;
  bool ended_ = false;
  std::atomic<bool> cancelled_{false};
  std::string error_;
  GenerateStats stats_;
  std::vector<int32_t> generated_;
  std::vector<TokenLogprob> logprobs_, prompt_logprobs_;
};

// The scheduler's figures for /metrics.
struct SchedulerMetrics {
  int64_t queued = 0, running = 0, kv_positions_in_use = 0, kv_bytes_in_use = 0;
  int64_t kv_positions_kept = 0, kv_bytes_kept = 0;  // the prompt cache's
  int64_t prompt_tokens_cached = 0;  // prompt tokens copied (kept caches, running sequences)
  int64_t steps = 0, step_rows = 0, tokens_in = 0, tokens_out = 0;
  double last_batch_size = 0;
  int decoder_threads = 0;  // the OpenMP threads decoder steps run on (0 until the worker starts)
  std::vector<double> ffn_per_token_by_layer;  // over the last window of steps
  double ffn_per_token = 0;
};

class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Scheduler {
 public:
  // The weights, config and tokenizer must outlive the scheduler.
  Scheduler(const ModelConfig& cfg, DecoderWeights<float> weights, const Tokenizer& tok, SchedulerOptions opt);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Checks the request (throws moepp::Error with the reason: the prompt too long for the
  // context, ...) and queues it; throws QueueFull when the queue is at its bound.
  std::shared_ptr<Stream> submit(SequenceRequest request);
  // A request's sequences (its prompts, each with its n choices), queued together or not at
  // all (QueueFull when they do not all fit), so that they are admitted at one step and
  // those sharing a prompt's beginning prefill it once.
  std::vector<std::shared_ptr<Stream>> submit_all(std::vector<SequenceRequest> requests);
  // Admits nothing more; sequences already admitted or queued run on.
  void stop_admitting() { admitting_ = false; }
  bool admitting() const { return admitting_; }
  // Cancels every queued and running sequence (their streams end with an error).
  void cancel_all();
  bool idle();
  SchedulerMetrics metrics();
  int64_t context() const { return ctx_; }
  // The tokenizer is shared with request threads; they encode under this lock.
  std::mutex& tokenizer_mutex() { return tok_mu_; }

 private:
  struct Running;
  struct Kept;
  void loop();
  void admit(std::vector<std::unique_ptr<Running>>& running);
  void step_once(std::vector<std::unique_ptr<Running>>& running);
  void retire(std::vector<std::unique_ptr<Running>>& running, size_t i, const std::string& error);
  // The kept cache sharing the longest prefix with prompt (shared: its length, at most all
  // but the prompt's last token); nullptr when none shares enough. Marks it used. A scored
  // prompt (scored: its top-k, >= 0) takes only a scored sequence's cache with top lists as
  // long, and one position less: the skipped tokens' log-probabilities come with it.
  Kept* longest_kept_prefix(const std::vector<int32_t>& prompt, int scored, int64_t& shared);
  void keep(Running& r);
  void evict_kept(int64_t running_positions, const Kept* spare);
  void publish_kv_metrics();  // under mu_
  // A sequence waiting for another's prefill of its prompt's beginning copies it once it
  // is there.
  void take_lead_prefix(Running& r);

  const ModelConfig& cfg_;
  DecoderWeights<float> weights_;
  const Tokenizer& tok_;
  SchedulerOptions opt_;
  int64_t ctx_ = 0, kv_budget_ = 0, kv_bytes_per_position_ = 0;
  std::mutex mu_, tok_mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Running>> queue_;
  std::atomic<bool> admitting_{true}, quit_{false}, cancel_all_{false};
  SchedulerMetrics metrics_;
  int64_t kv_in_use_ = 0;   // positions, worker thread (published in metrics_)
  std::vector<std::unique_ptr<Kept>> kept_;  // the prompt cache (worker thread)
  int64_t kept_positions_ = 0;  // their capacities
  uint64_t use_clock_ = 0;
  DecoderScratch<float> scratch_;
  Tensor<float> logits_;
  std::vector<RoutingStats> window_;
  int64_t window_steps_ = 0;
  std::thread worker_;
};

}  // namespace moepp
