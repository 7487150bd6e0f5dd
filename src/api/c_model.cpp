// The C API's models (include/moepp/moepp.h): load a folder as f32 parameters or as a
// packed model, tokenize, compute logits as `moepp logits` does (model_forward on f32, a
// Session on packed weights), generate_text for text, and keep the routing statistics of
// the last call. Built on model_folder, model_forward, Session, generate_text and
// Tokenizer only: the decoder behind them is not this file's business.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "api/guard.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "infer/generator.h"
#include "infer/session.h"
#include "model/model_folder.h"
#include "model/transformer.h"
#include "moe/routing_stats.h"
#include "moepp/moepp.h"

struct moepp_model {
  std::string dir;
  moepp::WeightType type = moepp::WeightType::f32;
  std::optional<moepp::LoadedModel> f32;         // dtype f32: the parameters as trained
  std::unique_ptr<moepp::PackedModel> packed;    // dtype bf16 / q8_0
  std::unique_ptr<moepp::Tokenizer> tokenizer;   // null when the folder has no tokenizer.model
  std::vector<moepp::RoutingStats> routing;      // of the last logits / generate call
  std::mutex mutex;                              // one call at a time

  const moepp::ModelConfig& config() const { return f32 ? f32->config : packed->config; }
  const moepp::Tokenizer& tok() const {
    MOEPP_CHECK(tokenizer, dir, ": the folder has no tokenizer.model (tokenize, detokenize and generate need one)");
    return *tokenizer;
  }
};

namespace moepp::api {
namespace {

std::string text_of(const char* s) { return std::string(s); }

moepp_model& model_of(moepp_model* m, const char* function) {
  require(m, function, "model");
  return *m;
}

WeightType weight_type_of(const char* dtype) {
  const std::string d = dtype ? dtype : "f32";
  for (WeightType t : kWeightTypes)
    if (d == weight_type_name(t)) return t;
  throw InvalidArgument{"moepp_model_load: unknown dtype '" + d + "' (expected f32, bf16, q8_0 or q4)"};
}

void check_capacity(size_t need, size_t capacity, const char* function, const char* what) {
  if (capacity < need)
    throw BufferTooSmall{std::string(function) + ": the buffer holds " + std::to_string(capacity) + " " + what +
                         ", the result needs " + std::to_string(need)};
}

// Thrown by the text callback when the caller's callback asks to stop; caught around
// generate_text, never outside this file.
struct StopGeneration {};

struct TextSink {
  moepp_text_callback fn;
  void* user;
};

}  // namespace
}  // namespace moepp::api

using namespace moepp;
using namespace moepp::api;

extern "C" {

const char* moepp_last_error(void) { return api::last_error(); }

const char* moepp_version(void) { return MOEPP_VERSION; }  // the project's version (CMakeLists.txt)

moepp_status moepp_model_load(const char* dir, const char* dtype, moepp_model** out) {
  return guarded_compute("moepp_model_load", [&] {
    require(dir, "moepp_model_load", "dir");
    require(out, "moepp_model_load", "out");
    *out = nullptr;
    auto m = std::make_unique<moepp_model>();
    m->dir = text_of(dir);
    m->type = weight_type_of(dtype);
    if (m->type == WeightType::f32) m->f32 = load_model_folder(m->dir);
    else m->packed = load_packed_model_folder(m->dir, m->type);
    const std::string tok = m->dir + "/tokenizer.model";
    std::error_code ec;
    if (std::filesystem::exists(tok, ec)) m->tokenizer = std::make_unique<Tokenizer>(tok);
    *out = m.release();
  });
}

void moepp_model_free(moepp_model* model) { delete model; }

moepp_status moepp_model_vocab_size(moepp_model* model, int32_t* vocab_size) {
  return guarded("moepp_model_vocab_size", [&] {
    auto& m = model_of(model, "moepp_model_vocab_size");
    require(vocab_size, "moepp_model_vocab_size", "vocab_size");
    *vocab_size = int32_t(m.config().vocab_size);
  });
}

moepp_status moepp_model_max_length(moepp_model* model, int64_t* max_length) {
  return guarded("moepp_model_max_length", [&] {
    auto& m = model_of(model, "moepp_model_max_length");
    require(max_length, "moepp_model_max_length", "max_length");
    *max_length = m.config().max_position_embeddings;
  });
}

moepp_status moepp_tokenize(moepp_model* model, const char* text, int32_t* ids, size_t capacity, size_t* n_ids) {
  return guarded("moepp_tokenize", [&] {
    auto& m = model_of(model, "moepp_tokenize");
    require(text, "moepp_tokenize", "text");
    require(n_ids, "moepp_tokenize", "n_ids");
    if (capacity > 0) require(ids, "moepp_tokenize", "ids");
    const std::lock_guard<std::mutex> lock(m.mutex);
    const Tokenizer& tok = m.tok();
    const std::vector<int32_t> out = tok.encode_prompt(text_of(text));  // as generate_text encodes a prompt
    *n_ids = out.size();
    check_capacity(out.size(), capacity, "moepp_tokenize", "ids");
    std::memcpy(ids, out.data(), out.size() * sizeof(int32_t));
  });
}

moepp_status moepp_detokenize(moepp_model* model, const int32_t* ids, size_t n_ids, char* text, size_t capacity,
                              size_t* length) {
  return guarded("moepp_detokenize", [&] {
    auto& m = model_of(model, "moepp_detokenize");
    require(length, "moepp_detokenize", "length");
    if (n_ids > 0) require(ids, "moepp_detokenize", "ids");
    if (capacity > 0) require(text, "moepp_detokenize", "text");
    const std::lock_guard<std::mutex> lock(m.mutex);
    const Tokenizer& tok = m.tok();
    const int64_t vocab = tok.vocab_size();
    for (size_t i = 0; i < n_ids; ++i)
      MOEPP_CHECK(ids[i] >= 0 && ids[i] < vocab, "token id ", ids[i], " at position ", i,
                  " is outside the tokenizer's vocabulary of ", vocab);
    const std::string s = tok.decode(std::span<const int32_t>(ids, n_ids));
    *length = s.size();
    check_capacity(s.size() + 1, capacity, "moepp_detokenize", "bytes");
    std::memcpy(text, s.c_str(), s.size() + 1);
  });
}

moepp_status moepp_logits(moepp_model* model, const int32_t* ids, size_t n_ids, float* logits, size_t capacity) {
  return guarded_compute("moepp_logits", [&] {
    auto& m = model_of(model, "moepp_logits");
    if (n_ids == 0) throw InvalidArgument{"moepp_logits: no token ids"};
    require(ids, "moepp_logits", "ids");
    require(logits, "moepp_logits", "logits");
    const std::lock_guard<std::mutex> lock(m.mutex);
    const int64_t vocab = m.config().vocab_size, max_len = m.config().max_position_embeddings;
    MOEPP_CHECK(n_ids <= size_t(max_len), "model: sequence of ", n_ids, " tokens exceeds max_position_embeddings ",
                max_len);  // before n_ids * vocab can overflow
    check_capacity(n_ids * size_t(vocab), capacity, "moepp_logits", "floats");
    // An id outside the vocabulary is refused by the decoder's embedding lookup, before any work.
    m.routing.clear();
    if (m.f32) {
      // The training forward, as `moepp logits --dtype f32` runs it: a Session's prefill
      // sums in another order and differs by ~1e-6 on logits of a few units.
      ModelCache<float> cache;
      model_forward(m.f32->config, m.f32->params, ids, 1, int64_t(n_ids), cache);
      std::memcpy(logits, cache.logits.data(), n_ids * size_t(vocab) * sizeof(float));
      m.routing = routing_stats_of(m.f32->config, cache);
      return;
    }
    Session<float> session(*m.packed, int64_t(n_ids), default_kv_dtype(m.packed->type));  // as `moepp logits`
    Tensor<float> out;
    session.append(ids, int64_t(n_ids), out);
    std::memcpy(logits, out.data(), n_ids * size_t(vocab) * sizeof(float));
    m.routing = session.last_routing();
  });
}

moepp_status moepp_sampling_init(moepp_sampling* sampling) {
  return guarded("moepp_sampling_init", [&] {
    require(sampling, "moepp_sampling_init", "sampling");
    const GenerateOptions d;  // the library's defaults are `moepp generate`'s
    sampling->max_tokens = d.max_tokens;
    sampling->temperature = d.sampler.temperature;
    sampling->top_k = d.sampler.top_k;
    sampling->top_p = d.sampler.top_p;
    sampling->seed = d.sampler.seed;
  });
}

namespace {

moepp_generation_options default_generation_options() {
  const GenerateOptions d;  // `moepp generate`'s defaults
  moepp_generation_options o{};
  o.size = sizeof(moepp_generation_options);
  o.repeat_penalty = d.repeat_penalty;
  o.repeat_last_n = d.repeat_last_n;
  o.presence_penalty = d.presence_penalty;
  o.frequency_penalty = d.frequency_penalty;
  o.min_p = d.sampler.min_p;
  return o;
}

// The fields the caller's struct holds (its `size`), over the defaults.
moepp_generation_options options_of(const moepp_generation_options* given) {
  moepp_generation_options o = default_generation_options();
  if (!given) return o;
  if (given->size < sizeof(size_t) || given->size > (size_t(1) << 16))
    throw InvalidArgument{"moepp_generate_with: options->size is " + std::to_string(given->size) +
                          "; set it with moepp_generation_options_init"};
  std::memcpy(&o, given, std::min(given->size, sizeof o));
  return o;
}

void generate_into(moepp_model* model, const char* prompt, const moepp_sampling* sampling,
                   const moepp_generation_options* options, moepp_text_callback on_text, void* user_data,
                   const char* fn) {
  auto& m = model_of(model, fn);
  require(prompt, fn, "prompt");
  require(sampling, fn, "sampling");
  const moepp_sampling& s = *sampling;
  const moepp_generation_options o = options_of(options);
  // The checks `moepp generate` makes on its flags.
  if (s.max_tokens < 0 || !std::isfinite(s.temperature) || s.temperature < 0 || s.top_k < 0 ||
      !(s.top_p > 0 && s.top_p <= 1))
    throw InvalidArgument{std::string(fn) + ": sampling needs max_tokens >= 0, temperature >= 0, top_k >= 0 and "
                          "top_p in (0, 1]; got max_tokens " + std::to_string(s.max_tokens) + ", temperature " +
                          std::to_string(s.temperature) + ", top_k " + std::to_string(s.top_k) + ", top_p " +
                          std::to_string(s.top_p)};
  if (!(o.repeat_penalty > 0 && std::isfinite(o.repeat_penalty)) || o.repeat_last_n < 0 ||
      !(o.presence_penalty >= -2 && o.presence_penalty <= 2) || !(o.frequency_penalty >= -2 && o.frequency_penalty <= 2) ||
      !(o.min_p >= 0 && o.min_p <= 1))
    throw InvalidArgument{std::string(fn) + ": options need repeat_penalty > 0, repeat_last_n >= 0, presence and "
                          "frequency penalties in [-2, 2] and min_p in [0, 1]; got " + std::to_string(o.repeat_penalty) +
                          ", " + std::to_string(o.repeat_last_n) + ", " + std::to_string(o.presence_penalty) + ", " +
                          std::to_string(o.frequency_penalty) + ", " + std::to_string(o.min_p)};
  if (o.n_stop > 0) require(o.stop, fn, "options->stop");
  if (o.n_logit_bias > 0) {
    require(o.logit_bias_ids, fn, "options->logit_bias_ids");
    require(o.logit_bias_values, fn, "options->logit_bias_values");
  }
  GenerateOptions opt;
  for (size_t i = 0; i < o.n_stop; ++i) {
    if (!o.stop[i] || !*o.stop[i])
      throw InvalidArgument{std::string(fn) + ": options->stop[" + std::to_string(i) + "] is NULL or empty"};
    opt.stop.push_back(text_of(o.stop[i]));
  }
  const std::lock_guard<std::mutex> lock(m.mutex);
  const Tokenizer& tok = m.tok();
  m.routing.clear();
  opt.max_tokens = s.max_tokens;
  opt.sampler = SamplerOptions{s.temperature, s.top_k, s.top_p, s.seed, o.min_p};
  opt.repeat_penalty = o.repeat_penalty;
  opt.repeat_last_n = o.repeat_last_n;
  opt.presence_penalty = o.presence_penalty;
  opt.frequency_penalty = o.frequency_penalty;
  for (size_t i = 0; i < o.n_logit_bias; ++i) {
    const int32_t id = o.logit_bias_ids[i];
    const float bias = o.logit_bias_values[i];
    if (id < 0 || id >= m.config().vocab_size || !std::isfinite(bias))
      throw InvalidArgument{std::string(fn) + ": logit bias " + std::to_string(i) + " (token " + std::to_string(id) +
                            ", " + std::to_string(bias) + ") needs a token of the vocabulary of " +
                            std::to_string(m.config().vocab_size) + " and a finite bias"};
    opt.logit_bias.emplace_back(id, bias);
  }
  opt.routing = &m.routing;
  const TextSink sink{on_text, user_data};
  bool first = true;  // generate_text shows the decoded prompt first; the callback gets the continuation
  auto show = [&](const std::string& piece) {
    if (first) {
      first = false;
      return;
    }
    if (sink.fn && sink.fn(piece.c_str(), piece.size(), sink.user) != 0) throw StopGeneration{};
  };
  try {
    if (m.f32) generate_text(m.f32->config, m.f32->params, tok, text_of(prompt), opt, show);
    else generate_text(*m.packed, tok, text_of(prompt), opt, show);
  } catch (const StopGeneration&) {
    // the caller asked to stop: not an error; m.routing holds the tokens run so far
  }
}

}  // namespace

moepp_status moepp_generation_options_init(moepp_generation_options* options) {
  return guarded("moepp_generation_options_init", [&] {
    require(options, "moepp_generation_options_init", "options");
    *options = default_generation_options();
  });
}

moepp_status moepp_generate(moepp_model* model, const char* prompt, const moepp_sampling* sampling,
                            moepp_text_callback on_text, void* user_data) {
  return guarded_compute("moepp_generate", [&] {
    generate_into(model, prompt, sampling, nullptr, on_text, user_data, "moepp_generate");
  });
}

moepp_status moepp_generate_with(moepp_model* model, const char* prompt, const moepp_sampling* sampling,
                                 const moepp_generation_options* options, moepp_text_callback on_text,
                                 void* user_data) {
  return guarded_compute("moepp_generate_with", [&] {
    generate_into(model, prompt, sampling, options, on_text, user_data, "moepp_generate_with");
  });
}

moepp_status moepp_routing(moepp_model* model, moepp_layer_routing* layers, size_t capacity, size_t* n_layers) {
  return guarded("moepp_routing", [&] {
    auto& m = model_of(model, "moepp_routing");
    require(n_layers, "moepp_routing", "n_layers");
    if (capacity > 0) require(layers, "moepp_routing", "layers");
    const std::lock_guard<std::mutex> lock(m.mutex);
    *n_layers = m.routing.size();
    check_capacity(m.routing.size(), capacity, "moepp_routing", "layers");
    const ModelConfig& cfg = m.config();
    size_t i = 0;
    for (int l = 0; l < cfg.num_hidden_layers && i < m.routing.size(); ++l) {
      if (!cfg.is_moe_layer(l)) continue;
      const RoutingStats& r = m.routing[i];
      moepp_layer_routing& o = layers[i++];
      o.layer = l;
      o.top_k = r.top_k;
      o.tokens = r.tokens;
      o.ffn_experts_per_token = r.ffn_experts_per_token();
      o.share_ffn = r.share(ExpertKind::ffn);
      o.share_zero = r.share(ExpertKind::zero);
      o.share_copy = r.share(ExpertKind::copy);
      o.share_constant = r.share(ExpertKind::constant);
    }
  });
}

}  // extern "C"
