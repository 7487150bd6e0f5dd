#include "infer/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "infer/generation.h"
#include "infer/session.h"

namespace moepp {

namespace {

// NaN or Inf logits mean the weights or activations went bad; sampling from them would
// still print tokens that pass for a continuation.
void check_finite_logits(const float* row, int64_t vocab, int step, int64_t position) {
  for (int64_t v = 0; v < vocab; ++v)
    MOEPP_CHECK(std::isfinite(row[v]), "generate: non-finite logits at step ", step, " (position ", position,
                "): the logit of token ", v, " is ", row[v], " (the model's weights or activations are not finite)");
}

}  // namespace

void apply_repeat_penalty(float* logits, int64_t vocab, const int32_t* recent, int64_t n, double penalty) {
  std::vector<int32_t> seen(recent, recent + n);
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  for (int32_t t : seen) {
    if (t < 0 || t >= vocab) continue;
    float& l = logits[t];
    l = l > 0 ? float(l / penalty) : float(l * penalty);
  }
}

void apply_generated_penalties(float* logits, int64_t vocab, const int32_t* generated, int64_t n, double presence,
                               double frequency) {
  std::vector<int32_t> ids(generated, generated + n);
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    if (ids[i] >= 0 && ids[i] < vocab) logits[ids[i]] = float(logits[ids[i]] - double(j - i) * frequency - presence);
    i = j;
  }
}

namespace {

// make_session(context) builds the session over whichever weights the caller holds.
std::string generate_with(const ModelConfig& cfg, const std::function<Session<float>(int64_t)>& make_session,
                          const Tokenizer& tok, const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text) {
  const std::vector<int32_t> ids = tok.encode_prompt(prompt);
  for (size_t i = 0; i < ids.size(); ++i)
    MOEPP_CHECK(ids[i] >= 0 && ids[i] < cfg.vocab_size, "generate: the tokenizer produced id ", ids[i],
                " outside the model's vocabulary of ", cfg.vocab_size, " (tokenizer and model do not match)");
  Generation gen(cfg, tok, ids, opt);
  using clock = std::chrono::steady_clock;
  Session<float> session = make_session(gen.capacity());
  const auto t0 = clock::now();
  Tensor<float> logits;
  if (opt.routing) opt.routing->clear();
  auto pool_routing = [&] {
    if (!opt.routing) return;
    const auto st = session.last_routing();
    if (opt.routing->empty()) *opt.routing = st;
    else
      for (size_t l = 0; l < st.size(); ++l) (*opt.routing)[l].add(st[l]);
  };
  session.append(ids.data(), int64_t(ids.size()), logits, LogitRows::last);
  pool_routing();
  const auto t1 = clock::now();
  const float* last = logits.data() + (logits.dim(0) - 1) * cfg.vocab_size;
  check_finite_logits(last, cfg.vocab_size, 0, session.length() - 1);  // before the prompt is shown
  if (on_text) on_text(gen.prompt_text());
  while (!gen.finished()) {
    const std::optional<int32_t> next = gen.step(logits.data() + (logits.dim(0) - 1) * cfg.vocab_size);
    const std::string text = gen.take_text();
    if (on_text && !text.empty()) on_text(text);
    if (!next) break;
    // The last token is fed too when there is room: the routing statistics count it.
    if (session.length() < gen.capacity()) {
      session.append(&*next, 1, logits, LogitRows::last);
      pool_routing();
    }
  }
  GenerateStats stats = gen.stats();
  stats.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  stats.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  if (opt.stats) *opt.stats = stats;
  return gen.prompt_text() + gen.continuation();
}

}  // namespace

std::string generate_text(const ModelConfig& cfg, const ModelParams<float>& params, const Tokenizer& tok,
                          const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text) {
  const KvDtype kv = opt.kv_dtype.value_or(KvDtype::f32);
  return generate_with(cfg, [&](int64_t ctx) { return Session<float>(cfg, params, ctx, kv); }, tok, prompt, opt, on_text);
}

std::string generate_text(const PackedModel& model, const Tokenizer& tok, const std::string& prompt,
                          const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  const KvDtype kv = opt.kv_dtype.value_or(default_kv_dtype(model.type));
  return generate_with(model.config, [&](int64_t ctx) { return Session<float>(model, ctx, kv); }, tok, prompt, opt,
                       on_text);
}

}  // namespace moepp
