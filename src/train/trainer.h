// The training loop: batches from train.bin, forward + backward (gradient accumulation),
// global-norm clipping, AdamW on a warmup + cosine schedule, periodic validation,
// checkpoints (every N steps, at the end, on a stop request and at the time limit),
// metrics.jsonl, and a progress line. `resume` continues a run folder exactly where it
// stopped. The library installs no signal handlers: the CLI's SIGINT/SIGTERM handlers set
// the flag `stop` points to (src/cli/cmd_train.cpp).
#pragma once
#include <atomic>
#include <cstdint>
#include <set>
#include <string>

#include "core/collectives.h"
#include "kernels/mixed_precision.h"
#include "model/config.h"

namespace moepp {

struct TrainOptions {
  std::string data_dir, out_dir;
  ModelConfig model;         // used for a new run; a resumed run uses its folder's config
  std::string model_label;   // the model in words ("small preset, vanilla"), kept in trainer_state.json
  int64_t steps = 1000;
  int64_t batch = 8, seq = 128, accum = 1;
  double lr = 1e-3, min_lr_ratio = 0.1;
  int64_t warmup = -1;       // -1: 5% of steps
  double weight_decay = 0.1, clip = 1.0;
  uint64_t seed = 1;
  int64_t checkpoint_every = 0;  // 0: only at the end (and on interrupt / time limit)
  int64_t eval_every = 0;        // 0: only at the end
  int64_t eval_batches = 16;
  double time_limit_s = 0;       // stop cleanly after this much training time (0: none)
  int64_t stop_after = 0;        // stop cleanly after this many steps of this invocation (0: none)
  bool resume = false;
  int log_every = 10;            // plain-line progress when stderr is not a terminal
  bool quiet = false;
  // Polled after every step: once it reads true, train() writes a checkpoint and returns
  // with `interrupted` set. Async-signal-safe to set (a lock-free atomic). Null: no stop.
  const std::atomic<bool>* stop = nullptr;
  // Flags the user gave explicitly ("--batch", ...): on --resume a given flag that
  // disagrees with the recorded run is an error; the others take the recorded values.
  std::set<std::string> given;
  // A multi-process run (null: one process; src/dist starts one under mpirun). Every rank
  // calls train() with the same options: each takes batch / size of every global batch,
  // rank 0 alone writes the run folder and prints progress, and the run's numbers are the
  // whole batch's (docs/distributed.md says which single-process run it equals).
  Collectives* comm = nullptr;
  bool check_replicas = false;  // compare a digest of the replicated weights after every step
  // The products of forward and backward: f32, or bf16 with f32 accumulation, f32 master
  // weights and f32 optimizer state (kernels/mixed_precision.h). Validation runs in f32.
  GemmPrecision precision = GemmPrecision::f32;
};

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0, val_loss = 0;
  int64_t val_tokens = 0;   // the held-out tokens val_loss is the mean over (--eval-batches of val.bin)
  double tokens_per_s = 0;  // median of this invocation's steps after the first 10 (all, if no more)
  bool interrupted = false, time_limited = false;
  bool stopped_after = false;  // --stop-after's step count reached (not the time limit)
  bool evaluated = false;      // val_loss comes from a validation pass of this invocation
};

TrainResult train(const TrainOptions& opt);

}  // namespace moepp
