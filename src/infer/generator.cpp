#include "infer/generator.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
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

// make_session(context) builds the session over whichever weights the caller holds.
std::string generate_with(const ModelConfig& cfg, const std::function<Session<float>(int64_t)>& make_session,
                          const Tokenizer& tok, const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text) {
  MOEPP_CHECK(opt.max_tokens >= 0, "generate: the number of tokens to generate must be 0 or more, got ",
              opt.max_tokens);
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  const auto p = tok.encode(prompt);
  ids.insert(ids.end(), p.begin(), p.end());
  for (size_t i = 0; i < ids.size(); ++i)
    MOEPP_CHECK(ids[i] >= 0 && ids[i] < cfg.vocab_size, "generate: the tokenizer produced id ", ids[i],
                " outside the model's vocabulary of ", cfg.vocab_size, " (tokenizer and model do not match)");
  const int64_t ctx = std::min<int64_t>(cfg.max_position_embeddings, int64_t(ids.size()) + opt.max_tokens);
  MOEPP_CHECK(int64_t(ids.size()) < ctx || opt.max_tokens == 0, "generate: the prompt (", ids.size(),
              " tokens) fills the context of ", cfg.max_position_embeddings);
  Session<float> session = make_session(std::max<int64_t>(ctx, int64_t(ids.size())));
  Sampler sampler(opt.sampler);
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
  const float* last = logits.data() + (logits.dim(0) - 1) * cfg.vocab_size;
  check_finite_logits(last, cfg.vocab_size, 0, session.length() - 1);  // before the prompt is shown
  std::vector<int32_t> text_ids = p;
  std::string shown = tok.decode(text_ids);
  if (on_text) on_text(shown);
  for (int i = 0; i < opt.max_tokens && session.length() < ctx; ++i) {
    last = logits.data() + (logits.dim(0) - 1) * cfg.vocab_size;
    if (i > 0) check_finite_logits(last, cfg.vocab_size, i, session.length() - 1);
    const int32_t next = sampler.sample(last, cfg.vocab_size);
    if (next == tok.eos_id()) break;
    text_ids.push_back(next);
    const std::string text = tok.decode(text_ids);
    if (on_text && text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0)
      on_text(text.substr(shown.size()));
    shown = text;
    if (session.length() < ctx) {
      session.append(&next, 1, logits, LogitRows::last);
      pool_routing();
    }
  }
  return shown;
}

}  // namespace

std::string generate_text(const ModelConfig& cfg, const ModelParams<float>& params, const Tokenizer& tok,
                          const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text) {
  return generate_with(cfg, [&](int64_t ctx) { return Session<float>(cfg, params, ctx); }, tok, prompt, opt, on_text);
}

std::string generate_text(const PackedModel& model, const Tokenizer& tok, const std::string& prompt,
                          const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  return generate_with(model.config, [&](int64_t ctx) { return Session<float>(model, ctx); }, tok, prompt, opt,
                       on_text);
}

}  // namespace moepp
