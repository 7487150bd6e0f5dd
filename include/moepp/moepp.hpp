// moepp.hpp: the C++ API of moepp, header-only over the C API (moepp.h), so it works with
// libmoepp_c.so (moepp::moepp) as with the whole engine (moepp::engine). Standard types
// only; every failure throws moepp::Error with the library's message.
//
//   auto model = moepp::Model::load("runs/a", "q8_0");
//   std::vector<float> logits = model.logits(model.tokenize("And God said"));  // [n * vocab]
//   moepp::Sampling greedy;
//   greedy.temperature = 0;
//   model.generate("And God said", greedy, [](const std::string& piece) {
//     std::cout << piece << std::flush;
//     return true;  // false stops
//   });
//   for (const auto& layer : model.routing()) std::cout << layer.ffn_experts_per_token << "\n";
//
// The classes live in an inline namespace (moepp::v1) so that their names never meet the
// engine's own C++ symbols when a program links the static engine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "moepp/error.hpp"
#include "moepp/moepp.h"

namespace moepp {
inline namespace v1 {

namespace detail {
inline void check(moepp_status s) {
  if (s != MOEPP_OK) throw Error(moepp_last_error());
}
}  // namespace detail

// Sampling parameters and the options beyond them (moepp_generation_options in moepp.h),
// with `moepp generate`'s defaults.
struct Sampling {
  int max_tokens = 128;
  double temperature = 0.8;  // 0: greedy
  int top_k = 40;            // 0: no limit
  double top_p = 0.95;       // 1: no limit
  uint64_t seed = 1;
  std::vector<std::string> stop = {};  // the text ends before the first of these it contains
  double repeat_penalty = 1.0;         // 1: off
  int repeat_last_n = 64;
  double presence_penalty = 0, frequency_penalty = 0;  // [-2, 2], over the generated tokens
  double min_p = 0;                                    // 0: off
  std::vector<std::pair<int32_t, float>> logit_bias = {};  // (token id, added to its logit)
};

// Where the tokens of the last logits() or generate() went, per MoE layer.
struct LayerRouting {
  int layer = 0;  // decoder layer index
  int top_k = 0;
  int64_t tokens = 0;
  double ffn_experts_per_token = 0;  // the MoE++ paper's measure, <= top_k
  double share_ffn = 0, share_zero = 0, share_copy = 0, share_constant = 0;
};

class Model {
 public:
  // dtype: "f32", "bf16", "q8_0" or "q4".
  static Model load(const std::string& dir, const std::string& dtype = "f32") {
    moepp_model* m = nullptr;
    detail::check(moepp_model_load(dir.c_str(), dtype.c_str(), &m));
    return Model(m);
  }

  int32_t vocab_size() const {
    int32_t v = 0;
    detail::check(moepp_model_vocab_size(m_.get(), &v));
    return v;
  }
  int64_t max_length() const {
    int64_t n = 0;
    detail::check(moepp_model_max_length(m_.get(), &n));
    return n;
  }

  // BOS, then the text's pieces (as generate() encodes a prompt).
  std::vector<int32_t> tokenize(const std::string& text) const {
    size_t n = 0;
    const moepp_status s = moepp_tokenize(m_.get(), text.c_str(), nullptr, 0, &n);
    if (s != MOEPP_BUFFER_TOO_SMALL) detail::check(s);
    std::vector<int32_t> ids(n);
    detail::check(moepp_tokenize(m_.get(), text.c_str(), ids.data(), ids.size(), &n));
    return ids;
  }

  std::string detokenize(const std::vector<int32_t>& ids) const {
    size_t len = 0;
    const moepp_status s = moepp_detokenize(m_.get(), ids.data(), ids.size(), nullptr, 0, &len);
    if (s != MOEPP_BUFFER_TOO_SMALL) detail::check(s);
    std::string text(len + 1, '\0');
    detail::check(moepp_detokenize(m_.get(), ids.data(), ids.size(), text.data(), text.size(), &len));
    text.resize(len);
    return text;
  }

  // Row-major [ids.size(), vocab_size()]: the same numbers as `moepp logits`.
  std::vector<float> logits(const std::vector<int32_t>& ids) {
    std::vector<float> out(ids.size() * size_t(vocab_size()));
    detail::check(moepp_logits(m_.get(), ids.data(), ids.size(), out.data(), out.size()));
    return out;
  }

  // Returns the continuation; on_piece (optional) receives it piece by piece and returns
  // false to stop. An exception thrown by on_piece stops generation and comes out here.
  std::string generate(const std::string& prompt, const Sampling& p = {},
                       const std::function<bool(const std::string&)>& on_piece = {}) {
    moepp_sampling s;
    detail::check(moepp_sampling_init(&s));
    s.max_tokens = p.max_tokens;
    s.temperature = p.temperature;
    s.top_k = p.top_k;
    s.top_p = p.top_p;
    s.seed = p.seed;
    moepp_generation_options o;
    detail::check(moepp_generation_options_init(&o));
    std::vector<const char*> stops;
    for (const std::string& x : p.stop) stops.push_back(x.c_str());
    o.stop = stops.data();
    o.n_stop = stops.size();
    o.repeat_penalty = p.repeat_penalty;
    o.repeat_last_n = p.repeat_last_n;
    o.presence_penalty = p.presence_penalty;
    o.frequency_penalty = p.frequency_penalty;
    o.min_p = p.min_p;
    std::vector<int32_t> bias_ids;
    std::vector<float> bias_values;
    for (const auto& [id, bias] : p.logit_bias) {
      bias_ids.push_back(id);
      bias_values.push_back(bias);
    }
    o.logit_bias_ids = bias_ids.data();
    o.logit_bias_values = bias_values.data();
    o.n_logit_bias = bias_ids.size();
    Sink sink{&on_piece, {}, {}};
    const moepp_status st = moepp_generate_with(m_.get(), prompt.c_str(), &s, &o, &Sink::call, &sink);
    if (sink.error) std::rethrow_exception(sink.error);
    detail::check(st);
    return sink.text;
  }

  std::vector<LayerRouting> routing() const {
    size_t n = 0;
    const moepp_status s = moepp_routing(m_.get(), nullptr, 0, &n);
    if (s != MOEPP_BUFFER_TOO_SMALL) detail::check(s);
    std::vector<moepp_layer_routing> raw(n);
    detail::check(moepp_routing(m_.get(), raw.data(), raw.size(), &n));
    std::vector<LayerRouting> out;
    for (const auto& r : raw)
      out.push_back({r.layer, r.top_k, r.tokens, r.ffn_experts_per_token, r.share_ffn, r.share_zero, r.share_copy,
                     r.share_constant});
    return out;
  }

  moepp_model* handle() const { return m_.get(); }  // for calls into the C API

 private:
  struct Free {
    void operator()(moepp_model* m) const { moepp_model_free(m); }
  };
  std::unique_ptr<moepp_model, Free> m_;
  explicit Model(moepp_model* m) : m_(m) {}

  struct Sink {
    const std::function<bool(const std::string&)>* fn;
    std::string text;
    std::exception_ptr error;
    static int call(const char* piece, size_t len, void* user) {
      auto& self = *static_cast<Sink*>(user);
      try {
        self.text.append(piece, len);
        if (*self.fn && !(*self.fn)(std::string(piece, len))) return 1;
        return 0;
      } catch (...) {
        self.error = std::current_exception();
        return 1;
      }
    }
  };
};

// Training, as `moepp train` does it (see moepp_train_options in moepp.h).
struct TrainOptions {
  std::string data_dir, out_dir;
  std::string preset = "small";
  bool vanilla = false;
  int64_t steps = 1000, batch = 8, seq = 128, accum = 1;
  double lr = 1e-3;
  uint64_t seed = 1;
  int64_t checkpoint_every = 0, eval_every = 0, eval_batches = 16;
  double time_limit_s = 0;
  int64_t stop_after = 0;
  bool resume = false;
  bool quiet = true;
};

struct TrainResult {
  int64_t steps_done = 0;
  double last_loss = 0, val_loss = 0, tokens_per_s = 0;
  bool interrupted = false, time_limited = false;
};

inline TrainResult train(const TrainOptions& o) {
  moepp_train_options c;
  detail::check(moepp_train_options_init(&c));
  c.data_dir = o.data_dir.c_str();
  c.out_dir = o.out_dir.c_str();
  c.preset = o.preset.c_str();
  c.vanilla = o.vanilla;
  c.steps = o.steps;
  c.batch = o.batch;
  c.seq = o.seq;
  c.accum = o.accum;
  c.lr = o.lr;
  c.seed = o.seed;
  c.checkpoint_every = o.checkpoint_every;
  c.eval_every = o.eval_every;
  c.eval_batches = o.eval_batches;
  c.time_limit_s = o.time_limit_s;
  c.stop_after = o.stop_after;
  c.resume = o.resume;
  c.quiet = o.quiet;
  moepp_train_result r;
  detail::check(moepp_train(&c, &r));
  return {r.steps_done, r.last_loss, r.val_loss, r.tokens_per_s, r.interrupted != 0, r.time_limited != 0};
}

// Asks running train() calls to checkpoint and return (async-signal-safe).
inline void request_training_stop() { moepp_train_request_stop(); }

}  // namespace v1
}  // namespace moepp
