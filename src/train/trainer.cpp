#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <memory>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/stats.h"
#include "data/data_folder.h"
#include "data/loader.h"
#include "data/shards.h"
#include "io/atomic_file.h"
#include "io/file_lock.h"
#include "model/model_folder.h"
#include "model/params.h"
#include "model/transformer.h"
#include "moe/expert_parallel.h"
#include "train/bf16_weights.h"
#include "train/checkpoint.h"
#include "train/evaluator.h"
#include "train/gradient_sync.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/replicas.h"
#include "train/schedule.h"

namespace moepp {

using json = nlohmann::json;

namespace {

std::string fmt_duration(double s) {
  char buf[32];
  const long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

void check_vocab(const std::vector<int32_t>& tokens, const ModelConfig& cfg, const std::string& what) {
  for (size_t i = 0; i < tokens.size(); ++i)
    MOEPP_CHECK(tokens[i] >= 0 && tokens[i] < cfg.vocab_size, what, ": token id ", tokens[i], " at position ", i,
                " is outside the model's vocabulary of ", cfg.vocab_size);
}

// Every option, checked before any work: a zero or negative size would divide by zero or
// loop forever, a negative rate would silently train backwards.
void validate_options(const TrainOptions& o) {
  auto at_least = [](const char* flag, int64_t v, int64_t lo) {
    MOEPP_CHECK(v >= lo, "train: ", flag, " is ", v, "; it must be at least ", lo);
  };
  at_least("--steps", o.steps, 1);
  at_least("--batch", o.batch, 1);
  at_least("--seq", o.seq, 1);
  at_least("--accum", o.accum, 1);
  at_least("--warmup", o.warmup, -1);
  at_least("--checkpoint-every", o.checkpoint_every, 0);
  at_least("--eval-every", o.eval_every, 0);
  at_least("--eval-batches", o.eval_batches, 1);
  at_least("--stop-after", o.stop_after, 0);
  at_least("--log-every", o.log_every, 1);
  auto number = [](const char* flag, double v, double lo, double hi) {
    MOEPP_CHECK(std::isfinite(v) && v >= lo && v <= hi, "train: ", flag, " is ", v, "; it must be in [", lo, ", ", hi,
                "]");
  };
  number("--lr", o.lr, 0, 1e3);
  MOEPP_CHECK(o.lr > 0, "train: --lr must be positive, got ", o.lr);
  number("--min-lr-ratio", o.min_lr_ratio, 0, 1);
  number("--weight-decay", o.weight_decay, 0, 1e3);
  number("--clip", o.clip, 0, 1e30);
  number("--time-limit", o.time_limit_s, 0, 1e12);
  MOEPP_CHECK(o.precision != GemmPrecision::bf16 || gemm_bf16_available(),
              "train: --precision bf16 needs a CPU with AVX-512 BF16 or AMX and a build with oneDNN as its GEMM "
              "provider; this one has none (use --precision f32)");
}

// Resume continues the run as it was recorded: batch, sequence, accumulation, seed and the
// schedule come from trainer_state.json. A flag given on this command line that disagrees
// is an error naming both values (--steps may change: that is how a run is extended).
void adopt_recorded_options(TrainOptions& o, const json& st, const std::string& state_path) {
  auto adopt = [&](const char* key, const char* flag, auto& value) {
    using V = std::remove_reference_t<decltype(value)>;
    if (!st.contains(key)) return;  // a state from before the field was recorded
    const bool integral = std::is_integral_v<V>;
    MOEPP_CHECK(integral ? st[key].is_number_integer() : st[key].is_number(), state_path, ": field ", key,
                " is not ", integral ? "an integer" : "a number");
    const V recorded = st[key].get<V>();
    MOEPP_CHECK(!o.given.count(flag) || value == recorded, "train --resume: ", flag, " ", value,
                " conflicts with the run's recorded ", key, " ", recorded, " (", state_path,
                "); drop the flag to continue the run as recorded, or start a new run");
    value = recorded;
  };
  adopt("batch", "--batch", o.batch);
  adopt("seq", "--seq", o.seq);
  adopt("accum", "--accum", o.accum);
  adopt("seed", "--seed", o.seed);
  adopt("warmup", "--warmup", o.warmup);
  adopt("lr", "--lr", o.lr);
  adopt("min_lr_ratio", "--min-lr-ratio", o.min_lr_ratio);
  adopt("weight_decay", "--weight-decay", o.weight_decay);
  adopt("clip", "--clip", o.clip);
  if (st.contains("precision")) {
    const json& v = st["precision"];
    MOEPP_CHECK(v.is_string() && (v == "f32" || v == "bf16"), state_path, ": field precision is ", v.dump(),
                ", not \"f32\" or \"bf16\"");
    const GemmPrecision recorded = parse_gemm_precision(v.get<std::string>());
    MOEPP_CHECK(!o.given.count("--precision") || o.precision == recorded, "train --resume: --precision ",
                gemm_precision_name(o.precision), " conflicts with the run's recorded precision ",
                gemm_precision_name(recorded), " (", state_path,
                "); drop the flag to continue the run as recorded, or start a new run");
    o.precision = recorded;
  }
  validate_options(o);
}

}  // namespace

TrainResult train(const TrainOptions& options) {
  using clock = std::chrono::steady_clock;
  TrainOptions o = options;
  validate_options(o);
  Collectives* const comm = o.comm;
  const int ranks = comm ? comm->size() : 1;
  const bool writer = !comm || comm->rank() == 0;  // the rank that writes the run folder and prints
  if (!writer) o.quiet = true;
  MOEPP_CHECK(o.batch % ranks == 0, "train: --batch ", o.batch, " must be a multiple of the ", ranks,
              " ranks, which share each batch evenly");
  std::unique_ptr<FolderLock> lock;
  if (writer) {
    ensure_writable_dir(o.out_dir);
    lock = std::make_unique<FolderLock>(o.out_dir, "training");
    for (const std::string& p : clean_run_folder(o.out_dir))
      if (!o.quiet) std::fprintf(stderr, "train: removed %s, left by a process that was killed while writing\n", p.c_str());
  }
  // A data folder without a tokenizer (synthetic token tasks) trains all the same.
  const std::string tok_path = file_exists(o.data_dir + "/tokenizer.model") ? o.data_dir + "/tokenizer.model" : "";
  const auto train_tokens = read_token_shard(o.data_dir + "/train.bin");
  const auto val_tokens = read_token_shard(o.data_dir + "/val.bin");
  const std::string state_path = checkpoint_dir(o.out_dir) + "/trainer_state.json";
  const std::string metrics_path = o.out_dir + "/metrics.jsonl";
  MOEPP_CHECK(o.resume || !file_exists(state_path), o.out_dir,
              ": already holds a run; pass --resume to continue it or choose another --out");
  MOEPP_CHECK(!o.resume || file_exists(state_path), o.out_dir,
              ": no checkpoint to resume (trainer_state.json is missing)");
  const json recorded = o.resume ? read_checkpoint_state(o.out_dir) : json();
  if (o.resume) adopt_recorded_options(o, recorded, state_path);
  const ModelConfig cfg = o.resume ? ModelConfig::load(checkpoint_dir(o.out_dir) + "/config.json") : o.model;
  cfg.validate();
  // The run's tokenizer (a resumed run's own copy) must be the one the shards were made with.
  check_data_tokenizer(o.data_dir, o.resume ? checkpoint_dir(o.out_dir) + "/tokenizer.model" : tok_path,
                       o.resume ? "train --resume" : "train");
  check_vocab(train_tokens, cfg, o.data_dir + "/train.bin");
  check_vocab(val_tokens, cfg, o.data_dir + "/val.bin");
  if (comm) {
    if (comm->ep_size() > 1) check_expert_parallel(cfg.layer_moe(), comm->ep_size());
    check_ranks_agree(*comm, cfg.to_json().dump() + " " + std::to_string(o.steps) + " " + std::to_string(o.batch) +
                                 " " + std::to_string(o.seq) + " " + std::to_string(o.accum) + " " +
                                 std::to_string(o.seed) + " " + std::to_string(o.lr) + " " +
                                 std::to_string(train_tokens.size()) + " " + std::to_string(val_tokens.size()) +
                                 " " + std::to_string(o.resume) + " " + gemm_precision_name(o.precision));
  }

  auto params = ModelParams<float>::zeros(cfg);
  Rng rng(o.seed);
  params.init(cfg, rng);
  AdamW opt(cfg, AdamWConfig{0.9, 0.95, 1e-8, o.weight_decay});
  Loader loader(train_tokens, o.batch, o.seq, o.seed);
  int64_t start = 0;
  double prior_time = 0;
  if (o.resume) {
    load_checkpoint(o.out_dir, recorded, cfg, params, opt);
    start = recorded.at("step").get<int64_t>();
    MOEPP_CHECK(start <= o.steps, o.out_dir, ": the checkpoint is at step ", start, ", past --steps ", o.steps,
                "; pass --steps ", start, " or more to continue it");
    loader.seek(LoaderPosition{recorded.at("loader_epoch").get<uint64_t>(),
                               recorded.at("loader_index").get<uint64_t>()});
    prior_time = recorded.value("train_seconds", 0.0);
    if (writer) truncate_jsonl_after(metrics_path, start);
  } else if (writer) {
    std::remove(metrics_path.c_str());
  }
  Schedule sched{o.lr, o.lr * o.min_lr_ratio, o.warmup >= 0 ? o.warmup : std::max<int64_t>(1, o.steps / 20), o.steps};

  // What the run trains, in words, for plot titles: a resumed run keeps its recorded label.
  const std::string model_label =
      o.resume && recorded.contains("model") && recorded["model"].is_string() ? recorded["model"].get<std::string>()
                                                                              : o.model_label;
  auto state_json = [&](int64_t step, double seconds) {
    const auto p = loader.position();
    return json{{"step", step}, {"loader_epoch", p.epoch}, {"loader_index", p.index}, {"seed", o.seed},
                {"steps", o.steps}, {"batch", o.batch}, {"seq", o.seq}, {"accum", o.accum}, {"lr", o.lr},
                {"min_lr_ratio", o.min_lr_ratio}, {"warmup", o.warmup}, {"weight_decay", o.weight_decay},
                {"clip", o.clip}, {"precision", gemm_precision_name(o.precision)}, {"train_seconds", seconds},
                {"data", o.data_dir}, {"model", model_label}};
  };

  const bool tty = isatty(fileno(stderr));
  auto grads = ModelParams<float>::zeros(cfg);
  if (comm) {  // expert parallel: each rank keeps only the experts it owns
    release_foreign_experts(cfg, grads, *comm);
    keep_only_own_experts(cfg, params, opt, *comm);  // weights and moments
    const int E = comm->ep_size(), F = cfg.num_ffn_experts();
    if (writer && !o.quiet)
      std::fprintf(stderr, "train: %d ranks, %d data-parallel x %d expert-parallel; each rank takes %lld of each "
                   "batch's %lld sequences and holds %d of the %d FFN experts of each MoE layer\n",
                   comm->size(), comm->dp_size(), E, (long long)(o.batch / ranks), (long long)o.batch, F / E, F);
  }
  ModelCache<float> cache;
  cache.capacity_factor = cfg.capacity_factor;  // training steps only; validation keeps every slot
  Bf16Shadow shadow;  // the weights rounded to bf16 (--precision bf16), kept current by AdamW
  cache.comm = comm;
  // Gradients are summed over the ranks while the last micro-batch's backward runs.
  std::unique_ptr<GradientSync> sync = comm ? std::make_unique<GradientSync>(cfg, grads, *comm) : nullptr;
  const int64_t share = o.batch / ranks;  // sequences of each batch this rank takes
  const int64_t first_row = (comm ? comm->rank() : 0) * share * o.seq;
  const auto foreign = comm ? foreign_experts(cfg, params, *comm) : std::unordered_set<const Tensor<float>*>{};
  std::vector<int32_t> ids, targets;
  TrainResult r;
  const auto t0 = clock::now();
  auto seconds = [&] { return prior_time + std::chrono::duration<double>(clock::now() - t0).count(); };
  // A checkpoint is collective: rank 0 collects every expert, writes, and drops them again.
  auto checkpoint = [&](int64_t at_step) {
    if (comm) collect_experts_for_checkpoint(cfg, params, opt, *comm);
    if (writer) save_checkpoint(o.out_dir, cfg, params, opt, state_json(at_step, seconds()), tok_path);
    if (comm) {
      keep_only_own_experts(cfg, params, opt, *comm);
      check_replicas_agree(cfg, params, *comm, at_step);
      comm->barrier();  // no rank runs ahead of a checkpoint that might still fail
    }
  };
  double tok_per_s = 0;
  double eval_seconds = 0;  // the last validation pass's duration (0: none yet)
  std::vector<double> step_speeds;  // tokens/s of each step of this invocation
  int64_t step = start;
  int64_t saved_step = -1;  // the step of this invocation's last checkpoint
  try {
    for (; step < o.steps; ++step) {
      const auto ts = clock::now();
      LossParts acc;
      std::vector<RoutingStats> routing;
      // Mixed precision reads the weights rounded to bf16 (activations are rounded per product).
      // AdamW rounds them into the shadow as it updates them; a separate pass runs only at the
      // first step of an invocation (the shadow is empty) or where the set of weight tensors changed.
      if (o.precision == GemmPrecision::bf16) {
        const auto spans = weight_matrix_spans(cfg, params);
        if (!shadow.holds(spans)) shadow.refresh(spans);
      }
      {  // the products of this step's forwards and backwards (validation stays f32)
        const GemmPrecisionScope products(o.precision, &shadow);
        for (int64_t a = 0; a < o.accum; ++a) {
          loader.next(ids, targets);
          model_forward(cfg, params, ids.data() + first_row, share, o.seq, cache);
          if (sync && a + 1 == o.accum) cache.grads_ready = [&](int part) { sync->ready(part); };
          else cache.grads_ready = nullptr;
          // The first micro-batch writes the gradients over the last step's (no zeroing pass).
          const LossParts p = model_backward(cfg, params, cache, targets.data() + first_row, grads,
                                             a == 0 ? GradMode::overwrite : GradMode::accumulate);
          acc.loss += p.loss / double(o.accum);
          acc.lm_loss += p.lm_loss / double(o.accum);
          acc.balance_loss += p.balance_loss / double(o.accum);
          auto st = routing_stats_of(cfg, cache);
          if (comm) sum_routing(st, *comm);
          if (routing.empty()) routing = st;
          else
            for (size_t l = 0; l < st.size(); ++l) routing[l].add(st[l]);
        }
      }
      MOEPP_CHECK(std::isfinite(acc.loss), "train: loss is ", acc.loss, " at step ", step + 1,
                  " (lower --lr?); the last checkpoint is kept");
      if (sync) sync->finish();
      if (o.accum > 1)
        grads.for_each(cfg, [&](const std::string&, Tensor<float>& t) {
          if (!t.allocated()) return;  // an expert another rank owns
          float* g = t.data();
          parallel_for(t.numel(), [&](int64_t j) { g[j] /= float(o.accum); }, 1 << 16);
        });
      // Clipping scales the gradients as AdamW reads them (one pass over them fewer).
      const double gnorm = comm ? grad_norm(cfg, grads, *comm) : grad_norm(cfg, grads);
      const double lr = sched.at(step);
      opt.update(cfg, params, grads, lr, foreign, o.precision == GemmPrecision::bf16 ? &shadow : nullptr,
                 clip_scale(gnorm, o.clip));
      if (comm && o.check_replicas) check_replicas_agree(cfg, params, *comm, step + 1);
      const double dt = std::chrono::duration<double>(clock::now() - ts).count();
      const double inst = double(o.batch * o.seq * o.accum) / dt;
      tok_per_s = tok_per_s == 0 ? inst : 0.9 * tok_per_s + 0.1 * inst;  // the progress line's smoothed speed
      step_speeds.push_back(inst);
      r.last_loss = acc.loss;
      if (writer) append_jsonl(metrics_path, {{"step", step + 1}, {"loss", acc.loss}, {"lm_loss", acc.lm_loss},
                                  {"balance_loss", acc.balance_loss}, {"lr", lr}, {"grad_norm", gnorm},
                                  {"tokens_per_s", inst}, {"routing", routing_json(routing)}});
      if (!o.quiet) {
        // The ETA counts the validation passes still to come (the periodic ones and the
        // final one): each takes as long as the last one did, or before any has run, a
        // forward pass over its tokens at a third of a training step's cost per token.
        const double eval_s = eval_seconds > 0 ? eval_seconds : double(o.eval_batches * o.batch * o.seq) / (3 * tok_per_s);
        const double eta = double(o.steps - step - 1) * double(o.batch * o.seq * o.accum) / tok_per_s +
                           double(validation_passes_left(step + 1, o.steps, o.eval_every)) * eval_s;
        if (tty) {
          std::fprintf(stderr, "\r  step %lld/%lld | loss %.4f | %.0f tok/s | ETA %s   ", (long long)(step + 1),
                       (long long)o.steps, acc.loss, tok_per_s, fmt_duration(eta).c_str());
        } else if ((step + 1) % o.log_every == 0 || step + 1 == o.steps) {
          std::fprintf(stderr, "  step %lld/%lld loss %.4f lm %.4f %.0f tok/s ETA %s\n", (long long)(step + 1),
                       (long long)o.steps, acc.loss, acc.lm_loss, tok_per_s, fmt_duration(eta).c_str());
        }
      }
      if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 < o.steps) {
        const auto te = clock::now();
        const EvalResult ev = evaluate(cfg, params, val_tokens, o.batch, o.seq, o.eval_batches, comm);
        eval_seconds = std::chrono::duration<double>(clock::now() - te).count();
        if (writer) append_jsonl(metrics_path, {{"step", step + 1}, {"val_loss", ev.loss}, {"val_perplexity", ev.perplexity},
                                    {"val_tokens", ev.tokens}});
      }
      if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0) {
        checkpoint(step + 1);
        saved_step = step + 1;
      }
      // Stop requests and the time limit, as every rank sees them: any rank's stops all.
      double stops[2] = {o.stop && o.stop->load() ? 1.0 : 0.0, o.time_limit_s > 0 && seconds() >= o.time_limit_s ? 1.0 : 0.0};
      if (comm) comm->sum_all(stops, 2);
      if (stops[0] > 0) {
        r.interrupted = true;
        ++step;
        break;
      }
      if (stops[1] > 0) {
        r.time_limited = true;
        ++step;
        break;
      }
      if (o.stop_after > 0 && step + 1 - start >= o.stop_after) {
        r.stopped_after = true;
        ++step;
        break;
      }
    }
  } catch (...) {
    if (tty && !o.quiet) std::fprintf(stderr, "\n");
    throw;
  }
  if (tty && !o.quiet) std::fprintf(stderr, "\n");
  r.steps_done = step;
  // As `compare` and metrics.jsonl readers report it: the median after the first 10 steps
  // (their warm-up), or of all steps when there are no more.
  const size_t warm = step_speeds.size() > 10 ? 10 : 0;
  r.tokens_per_s = median(std::vector<double>(step_speeds.begin() + std::ptrdiff_t(warm), step_speeds.end()));
  if (saved_step != step) checkpoint(step);
  if (!r.interrupted) {
    const EvalResult ev = evaluate(cfg, params, val_tokens, o.batch, o.seq, o.eval_batches, comm);
    r.val_loss = ev.loss;
    r.val_tokens = ev.tokens;
    r.evaluated = true;
    json line = {{"step", step}, {"val_loss", ev.loss}, {"val_perplexity", ev.perplexity},
                 {"val_tokens", ev.tokens}, {"val_routing", routing_json(ev.routing)}};
    if (writer) append_jsonl(metrics_path, line);
  }
  return r;
}

}  // namespace moepp
