// moepp train: train a model (a preset, a config.json, or resume a run folder).
#include <cmath>
#include <cstdio>

#include "core/error.h"

#include "cli/commands.h"
#include "data/tokenizer.h"
#include "model/model_folder.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moepp::cli {

namespace {
struct TrainArgs {
  TrainOptions opt;
  std::string preset = "small", config;
  bool vanilla = false;
  double tau = -1, beta = -1, capacity_factor = -1;
  int threads = 0;
  int ep_size = 1;
  std::string precision = "f32";
};

void run_train(TrainArgs* a, CLI::App* cmd, Collectives* comm);
}  // namespace

void add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model; checkpoints and metrics.jsonl go into the run folder");
  auto a = std::make_shared<TrainArgs>();
  auto& o = a->opt;
  cmd->add_option("--data", o.data_dir, "Prepared data folder (train.bin, val.bin, tokenizer.model)")->required();
  cmd->add_option("--out", o.out_dir, "Run folder (a model folder plus optimizer and trainer state)")->required();
  auto* preset = cmd->add_option("--preset", a->preset, "tiny, small or paper-0.6b")->default_val("small");
  cmd->add_option("--config", a->config, "A config.json to train instead of a preset")->excludes(preset)->check(CLI::ExistingFile);
  cmd->add_flag("--vanilla", a->vanilla, "The preset's vanilla twin: no zero-computation experts, no gating residual");
  cmd->add_option("--tau", a->tau, "Balance-loss weight of zero-computation experts (moepp.balance_tau)");
  cmd->add_option("--beta", a->beta, "Balance-loss coefficient (moepp.balance_coef)");
  cmd->add_option("--capacity-factor", a->capacity_factor,
                  "Expert capacity factor gamma (moepp.capacity_factor; SPEC 2.4, the paper's Eq. 8): slots over an "
                  "expert's capacity in a batch are dropped in training; 0: dropless (the presets' default)");
  cmd->add_option("--steps", o.steps, "Optimizer steps")->default_val(1000);
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch")->default_val(8);
  cmd->add_option("--seq", o.seq, "Tokens per sequence")->default_val(128);
  cmd->add_option("--accum", o.accum, "Micro-batches per step (gradient accumulation)")->default_val(1);
  cmd->add_option("--lr", o.lr, "Peak learning rate")->default_val(1e-3);
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Final learning rate as a fraction of --lr")->default_val(0.1);
  cmd->add_option("--warmup", o.warmup, "Warmup steps (-1: 5% of --steps)")->default_val(-1);
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->default_val(0.1);
  cmd->add_option("--clip", o.clip, "Global gradient-norm clip (0: off)")->default_val(1.0);
  cmd->add_option("--seed", o.seed, "Seed of initialisation and data order")->default_val(1);
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N steps (0: at the end only)")->default_val(0);
  cmd->add_option("--eval-every", o.eval_every, "Validate every N steps (0: at the end only)")->default_val(0);
  cmd->add_option("--eval-batches", o.eval_batches, "Validation batches per evaluation")->default_val(16);
  cmd->add_option("--time-limit", o.time_limit_s, "Stop with a checkpoint after this many seconds (0: no limit)")->default_val(0);
  cmd->add_option("--stop-after", o.stop_after, "Checkpoint and stop after N steps of this invocation (0: run to --steps)")->default_val(0);
  cmd->add_flag("--resume", o.resume, "Continue the run in --out exactly where it stopped");
  cmd->add_option("--log-every", o.log_every, "Progress line every N steps when not on a terminal")->default_val(10);
  cmd->add_option("--ep-size", a->ep_size,
                  "Under mpirun -np N: ranks per expert-parallel group (divides N and the FFN experts; "
                  "1: pure data parallel)")
      ->default_val(1)
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--check-replicas", a->opt.check_replicas,
                "Under mpirun: compare a digest of the replicated weights across ranks after every step");
  cmd->add_option("--precision", a->precision,
                  "Products of forward and backward: f32, or bf16 (operands rounded to bf16, f32 accumulation, "
                  "f32 master weights and optimizer state; needs AVX-512 BF16 or AMX; docs/mixed_precision.md)")
      ->default_val("f32")
      ->check(CLI::IsMember({"f32", "bf16"}));
  add_threads_option(cmd, &a->threads);
  cmd->callback([a, cmd] {
    run_distributed(a->ep_size, [&](Collectives* comm) { run_train(a.get(), cmd, comm); });
  });
}

namespace {

void run_train(TrainArgs* a, CLI::App* cmd, Collectives* comm) {
  apply_threads(a->threads);
  const bool printer = !comm || comm->rank() == 0;
  auto& o = a->opt;
  o.comm = comm;
  o.precision = parse_gemm_precision(a->precision);
  for (const char* flag : {"--batch", "--seq", "--accum", "--seed", "--lr", "--min-lr-ratio", "--warmup",
                           "--weight-decay", "--clip", "--precision"})
    if (cmd->count(flag) > 0) o.given.insert(flag);
  MOEPP_CHECK(!cmd->count("--tau") || (std::isfinite(a->tau) && a->tau >= 0), "train: --tau is ", a->tau,
              "; the balance weight of zero-computation experts must be non-negative");
  MOEPP_CHECK(!cmd->count("--beta") || (std::isfinite(a->beta) && a->beta >= 0), "train: --beta is ", a->beta,
              "; the balance-loss coefficient must be non-negative");
  MOEPP_CHECK(!cmd->count("--capacity-factor") || (std::isfinite(a->capacity_factor) && a->capacity_factor >= 0),
              "train: --capacity-factor is ", a->capacity_factor,
              "; it must be a finite number, 0 or more (0: dropless)");
  const bool model_flags = cmd->count("--tau") || cmd->count("--beta") || cmd->count("--capacity-factor") ||
                           cmd->count("--config") || cmd->count("--vanilla") || cmd->count("--preset");
  if (!o.resume || model_flags) {
    const Tokenizer tok(o.data_dir + "/tokenizer.model");
    if (a->config.empty()) {
      o.model = ModelConfig::preset(a->preset, tok.vocab_size(), a->vanilla);
    } else {
      o.model = ModelConfig::load(a->config);
    }
    if (cmd->count("--tau")) o.model.moe.balance_tau = a->tau;
    if (cmd->count("--beta")) o.model.balance_coef = a->beta;
    if (cmd->count("--capacity-factor")) o.model.capacity_factor = a->capacity_factor;
    o.model.bos_token_id = tok.bos_id();
    o.model.eos_token_id = tok.eos_id();
    o.model.validate();
    o.model_label = a->config.empty() ? a->preset + " preset" : a->config;
  }
  if (o.resume && model_flags) {
    // The model comes from the run folder; flags that name it must name the same one.
    const std::string path = checkpoint_dir(o.out_dir) + "/config.json";
    const auto have = ModelConfig::load(path).to_json(), want = o.model.to_json();
    for (auto it = want.begin(); it != want.end(); ++it)
      MOEPP_CHECK(have.contains(it.key()) && have[it.key()] == it.value(), "train --resume: the model flags give ",
                  it.key(), " ", it.value().dump(), " but the run has ", have.value(it.key(), nlohmann::json()).dump(),
                  " (", path, "); drop the model flags to continue the run as it is");
  }
  if (!o.resume && printer) {
    std::fprintf(stderr, "train: %s, %lld parameters (%d FFN + %d zero-computation experts, top-%d), %lld steps of %lld x %lld tokens\n",
                 a->config.empty() ? (a->preset + (a->vanilla ? " (vanilla)" : "")).c_str() : a->config.c_str(),
                 (long long)total_params(o.model), o.model.num_ffn_experts(),
                 o.model.num_experts() - o.model.num_ffn_experts(), o.model.moe.top_k, (long long)o.steps,
                 (long long)o.batch, (long long)o.seq);
  }
  TrainResult r;
  {
    const StopOnSignals signals;  // Ctrl-C: checkpoint, then the JSON line below, exit 0
    o.stop = signals.flag();
    r = train(o);
  }
  if (!printer) return;
  // val_loss is null when this invocation ran no validation (Ctrl-C skips it).
  const std::string val = r.evaluated ? nlohmann::json(r.val_loss).dump() : "null";
  // val_loss is over val_tokens held-out tokens (--eval-batches), compare's over the whole
  // split; tokens_per_s is the median step after warm-up, as compare reports it.
  std::printf("{\"steps\": %lld, \"loss\": %.6f, \"val_loss\": %s, \"val_tokens\": %lld, \"tokens_per_s\": %.1f, "
              "\"interrupted\": %s, \"time_limited\": %s, \"stopped_after\": %s}\n",
              (long long)r.steps_done, r.last_loss, val.c_str(), (long long)r.val_tokens, r.tokens_per_s,
              r.interrupted ? "true" : "false",
              r.time_limited ? "true" : "false", r.stopped_after ? "true" : "false");
  if (r.interrupted || r.time_limited || r.stopped_after)
    std::fprintf(stderr,
                 "train: %s at step %lld; the checkpoint is %s/current. Continue with:\n"
                 "  moepp train --data %s --out %s --steps %lld --resume\n",
                 r.interrupted ? "interrupted" : r.time_limited ? "time limit reached" : "--stop-after reached",
                 (long long)r.steps_done, o.out_dir.c_str(), o.data_dir.c_str(), o.out_dir.c_str(),
                 (long long)o.steps);
}

}  // namespace

}  // namespace moepp::cli
