// The C API's training (include/moepp/moepp.h): moepp_train runs the library's trainer as
// `moepp train` does for a preset or a resumed run; moepp_train_request_stop is the stop
// request the trainer polls after every step (no signal handler is installed here).
#include <atomic>
#include <string>

#include "api/guard.h"
#include "data/tokenizer.h"
#include "model/config.h"
#include "moepp/moepp.h"
#include "train/trainer.h"

namespace {
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "moepp_train_request_stop is called from signal handlers");

// Clears the stop request when moepp_train returns, however it returns.
struct ClearStopOnReturn {
  ~ClearStopOnReturn() { g_stop = false; }
};
}  // namespace

using namespace moepp;
using namespace moepp::api;

extern "C" {

moepp_status moepp_train_options_init(moepp_train_options* options) {
  return guarded("moepp_train_options_init", [&] {
    require(options, "moepp_train_options_init", "options");
    const TrainOptions d;  // the trainer's defaults are `moepp train`'s
    *options = moepp_train_options{};
    options->preset = "small";
    options->steps = d.steps;
    options->batch = d.batch;
    options->seq = d.seq;
    options->accum = d.accum;
    options->lr = d.lr;
    options->seed = d.seed;
    options->checkpoint_every = d.checkpoint_every;
    options->eval_every = d.eval_every;
    options->eval_batches = d.eval_batches;
    options->time_limit_s = d.time_limit_s;
    options->stop_after = d.stop_after;
    options->quiet = 1;
  });
}

moepp_status moepp_train(const moepp_train_options* options, moepp_train_result* result) {
  const ClearStopOnReturn clear;
  return guarded_compute("moepp_train", [&] {
    require(options, "moepp_train", "options");
    require(result, "moepp_train", "result");
    const moepp_train_options& c = *options;
    require(c.data_dir, "moepp_train", "options->data_dir");
    require(c.out_dir, "moepp_train", "options->out_dir");
    TrainOptions o;
    o.data_dir = c.data_dir;
    o.out_dir = c.out_dir;
    o.steps = c.steps;
    o.batch = c.batch;
    o.seq = c.seq;
    o.accum = c.accum;
    o.lr = c.lr;
    o.seed = c.seed;
    o.checkpoint_every = c.checkpoint_every;
    o.eval_every = c.eval_every;
    o.eval_batches = c.eval_batches;
    o.time_limit_s = c.time_limit_s;
    o.stop_after = c.stop_after;
    o.resume = c.resume != 0;
    o.quiet = c.quiet != 0;
    o.stop = &g_stop;
    if (!o.resume) {  // a new run: the preset sized to the data's tokenizer, as `moepp train` builds it
      const Tokenizer tok(o.data_dir + "/tokenizer.model");
      o.model = ModelConfig::preset(c.preset ? c.preset : "small", tok.vocab_size(), c.vanilla != 0);
      o.model.bos_token_id = tok.bos_id();
      o.model.eos_token_id = tok.eos_id();
      o.model.validate();
    }
    const TrainResult r = train(o);
    *result = moepp_train_result{r.steps_done, r.last_loss,     r.val_loss,
                                 r.tokens_per_s, r.interrupted, r.time_limited || r.stopped_after};
  });
}

void moepp_train_request_stop(void) { g_stop = true; }

}  // extern "C"
