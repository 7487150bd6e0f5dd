#include "infer/generator.h"

#include <algorithm>
#include <chrono>
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

namespace {

// make_session(context) builds the session over whichever weights the caller holds.
std::string generate_with(const ModelConfig& cfg, const std::function<Session<float>(int64_t)>& make_session,
                          const Tokenizer& tok, const std::string& prompt, const GenerateOptions& opt,
                          const std::function<void(const std::string&)>& on_text) {
  MOEPP_CHECK(opt.max_tokens >= 0, "generate: the number of tokens to generate must be 0 or more, got ",
              opt.max_tokens);
  std::vector<int32_t> ids = tok.encode_prompt(prompt);
  const std::vector<int32_t> p(ids.begin() + (tok.bos_id() >= 0 ? 1 : 0), ids.end());  // the prompt's own tokens
  for (size_t i = 0; i < ids.size(); ++i)
    MOEPP_CHECK(ids[i] >= 0 && ids[i] < cfg.vocab_size, "generate: the tokenizer produced id ", ids[i],
                " outside the model's vocabulary of ", cfg.vocab_size, " (tokenizer and model do not match)");
  MOEPP_CHECK(opt.context >= 0 && opt.context <= cfg.max_position_embeddings, "generate: a context of ",
              opt.context, " positions is outside what the model holds (1 to ", cfg.max_position_embeddings, ")");
  const int64_t limit = opt.context > 0 ? opt.context : cfg.max_position_embeddings;
  const int64_t ctx = std::min<int64_t>(limit, int64_t(ids.size()) + opt.max_tokens);
  MOEPP_CHECK(int64_t(ids.size()) < ctx || opt.max_tokens == 0, "generate: the prompt (", ids.size(),
              " tokens) fills the context of ", limit);
  MOEPP_CHECK(opt.repeat_penalty > 0 && std::isfinite(opt.repeat_penalty), "generate: the repeat penalty ",
              opt.repeat_penalty, " must be a positive number");
  for (const auto& s : opt.stop) MOEPP_CHECK(!s.empty(), "generate: an empty stop string");
  GenerateStats stats;
  stats.prompt_tokens = int64_t(ids.size());
  stats.context = ctx;
  using clock = std::chrono::steady_clock;
  Session<float> session = make_session(std::max<int64_t>(ctx, int64_t(ids.size())));
  const auto t0 = clock::now();
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
  const auto t1 = clock::now();
  stats.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  const float* last = logits.data() + (logits.dim(0) - 1) * cfg.vocab_size;
  check_finite_logits(last, cfg.vocab_size, 0, session.length() - 1);  // before the prompt is shown
  std::vector<int32_t> text_ids = p;
  const std::string prompt_text = tok.decode(text_ids);
  if (on_text) on_text(prompt_text);
  // The continuation so far, and how much of it on_text has seen: text that could be the
  // start of a stop string waits until the next tokens say whether it is one.
  std::string continuation;
  size_t sent = 0;
  auto send_up_to = [&](size_t end) {
    if (on_text && end > sent) on_text(continuation.substr(sent, end - sent));
    sent = std::max(sent, end);
  };
  std::vector<float> row(static_cast<size_t>(cfg.vocab_size));
  bool stopped = false;
  for (int i = 0; i < opt.max_tokens && session.length() < ctx && !stopped; ++i) {
    last = logits.data() + (logits.dim(0) - 1) * cfg.vocab_size;
    if (i > 0) check_finite_logits(last, cfg.vocab_size, i, session.length() - 1);
    const float* scores = last;
    if (opt.repeat_penalty != 1.0) {
      std::copy(last, last + cfg.vocab_size, row.begin());
      const int64_t n = std::min<int64_t>(opt.repeat_last_n, int64_t(ids.size()));
      apply_repeat_penalty(row.data(), cfg.vocab_size, ids.data() + ids.size() - size_t(n), n, opt.repeat_penalty);
      scores = row.data();
    }
    const int32_t next = sampler.sample(scores, cfg.vocab_size);
    if (next == tok.eos_id()) {
      stats.stopped = GenerateStats::Stop::eos;
      break;
    }
    ids.push_back(next);
    text_ids.push_back(next);
    ++stats.generated_tokens;
    const std::string text = tok.decode(text_ids);
    // Pieces are decoded together with the prompt so that leading spaces survive; the
    // continuation is what follows the prompt's text.
    if (text.size() >= prompt_text.size() && text.compare(0, prompt_text.size(), prompt_text) == 0)
      continuation = text.substr(prompt_text.size());
    size_t cut = std::string::npos;
    for (const auto& s : opt.stop) cut = std::min(cut, continuation.find(s));
    if (cut != std::string::npos) {
      continuation.resize(cut);
      stats.stopped = GenerateStats::Stop::stop_string;
      stopped = true;
      break;
    }
    size_t hold = 0;  // the longest tail that is a stop string's beginning
    for (const auto& s : opt.stop)
      for (size_t len = std::min(s.size() - 1, continuation.size()); len > hold; --len)
        if (continuation.compare(continuation.size() - len, len, s, 0, len) == 0) {
          hold = len;
          break;
        }
    send_up_to(continuation.size() - hold);
    if (session.length() < ctx) {
      session.append(&next, 1, logits, LogitRows::last);
      pool_routing();
    }
  }
  send_up_to(continuation.size());
  if (stats.stopped == GenerateStats::Stop::limit && stats.generated_tokens < opt.max_tokens)
    stats.stopped = GenerateStats::Stop::context;
  stats.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  if (opt.stats) *opt.stats = stats;
  const std::string shown = prompt_text + continuation;
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
