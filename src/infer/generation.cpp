#include "infer/generation.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moepp {

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t id, int k) {
  double max = logits[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max(max, double(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(logits[v]) - max);
  const double log_z = max + std::log(sum);
  TokenLogprob t;
  t.id = id;
  t.logprob = float(double(logits[id]) - log_z);
  if (k > 0) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    for (int64_t v = 0; v < vocab; ++v) order[size_t(v)] = int32_t(v);
    const auto kk = std::min<int64_t>(k, vocab);
    std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int64_t i = 0; i < kk; ++i)
      t.top.emplace_back(order[size_t(i)], float(double(logits[order[size_t(i)]]) - log_z));
  }
  return t;
}

Generation::Generation(const ModelConfig& cfg, const Tokenizer& tok, std::vector<int32_t> prompt,
                       const GenerateOptions& opt, int top_logprobs)
    : cfg_(cfg),
      tok_(tok),
      opt_(opt),
      prompt_(std::move(prompt)),
      text_(tok, {}),
      top_logprobs_(top_logprobs),
      sampler_(opt.sampler) {
  MOEPP_CHECK(opt.max_tokens >= 0, "generate: the number of tokens to generate must be 0 or more, got ",
              opt.max_tokens);
  MOEPP_CHECK(!prompt_.empty(), "generate: an empty prompt (not even BOS)");
  for (size_t i = 0; i < prompt_.size(); ++i)
    MOEPP_CHECK(prompt_[i] >= 0 && prompt_[i] < cfg.vocab_size, "generate: the prompt holds id ", prompt_[i],
                " outside the model's vocabulary of ", cfg.vocab_size);
  MOEPP_CHECK(opt.context >= 0 && opt.context <= cfg.max_position_embeddings, "generate: a context of ", opt.context,
              " positions is outside what the model holds (1 to ", cfg.max_position_embeddings, ")");
  const int64_t limit = opt.context > 0 ? opt.context : cfg.max_position_embeddings;
  const int64_t n = int64_t(prompt_.size());
  context_ = std::max(std::min<int64_t>(limit, n + opt.max_tokens), n);
  MOEPP_CHECK(n < context_ || opt.max_tokens == 0, "generate: the prompt (", n, " tokens) fills the context of ", limit);
  MOEPP_CHECK(opt.repeat_penalty > 0 && std::isfinite(opt.repeat_penalty), "generate: the repeat penalty ",
              opt.repeat_penalty, " must be a positive number");
  MOEPP_CHECK(std::isfinite(opt.presence_penalty) && std::isfinite(opt.frequency_penalty),
              "generate: the presence and frequency penalties must be finite, got ", opt.presence_penalty, " and ",
              opt.frequency_penalty);
  for (const auto& [id, bias] : opt.logit_bias)
    MOEPP_CHECK(id >= 0 && id < cfg.vocab_size && std::isfinite(bias), "generate: a logit bias of ", bias,
                " for token ", id, " (a finite bias for a token of the vocabulary of ", cfg.vocab_size, ")");
  for (const auto& s : opt.stop) MOEPP_CHECK(!s.empty(), "generate: an empty stop string");
  ids_ = prompt_;
  text_ = Detokenizer(tok, std::vector<int32_t>(
                               prompt_.begin() + (tok.bos_id() >= 0 && prompt_[0] == tok.bos_id() ? 1 : 0), prompt_.end()));
  prompt_text_ = text_.text();
  stats_.prompt_tokens = n;
  stats_.context = context_;
  row_.resize(static_cast<size_t>(cfg.vocab_size));
  finished_ = opt.max_tokens == 0;
}

std::optional<int32_t> Generation::step(const float* logits) {
  MOEPP_CHECK(!finished_, "generate: step after the generation finished");
  const int64_t V = cfg_.vocab_size;
  const int64_t position = int64_t(ids_.size()) - 1;
  for (int64_t v = 0; v < V; ++v)
    MOEPP_CHECK(std::isfinite(logits[v]), "generate: non-finite logits at step ", generated_.size(), " (position ",
                position, "): the logit of token ", v, " is ", logits[v],
                " (the model's weights or activations are not finite)");
  const float* scores = logits;
  const bool penalised = opt_.presence_penalty != 0 || opt_.frequency_penalty != 0;
  if (opt_.repeat_penalty != 1.0 || penalised || !opt_.logit_bias.empty()) {
    std::copy(logits, logits + V, row_.begin());
    if (opt_.repeat_penalty != 1.0) {
      const int64_t n = std::min<int64_t>(opt_.repeat_last_n, int64_t(ids_.size()));
      apply_repeat_penalty(row_.data(), V, ids_.data() + ids_.size() - size_t(n), n, opt_.repeat_penalty);
    }
    if (penalised)
      apply_generated_penalties(row_.data(), V, generated_.data(), int64_t(generated_.size()), opt_.presence_penalty,
                                opt_.frequency_penalty);
    for (const auto& [id, bias] : opt_.logit_bias) row_[size_t(id)] += bias;
    scores = row_.data();
  }
  const int32_t next = sampler_.sample(scores, V);
  if (next == tok_.eos_id() && !opt_.ignore_eos) {
    stats_.stopped = GenerateStats::Stop::eos;
    finished_ = true;
    safe_ = continuation_.size();
    return std::nullopt;
  }
  if (top_logprobs_ >= 0) logprobs_.push_back(token_logprob(logits, V, next, top_logprobs_));
  ids_.push_back(next);
  generated_.push_back(next);
  ++stats_.generated_tokens;
  const size_t unchanged = text_.push(next);
  const std::string& text = text_.text();
  const size_t p = prompt_text_.size();
  // The continuation is what follows the prompt's text (decoded together, so that a
  // leading space survives). Only its part past `kept` can have changed.
  // (When a token changes the prompt's own text, the continuation waits as it was until
  // the prompt's text is back.)
  size_t kept = 0;
  if (unchanged < p)
    prompt_intact_ = text.size() >= p && text.compare(0, p, prompt_text_) == 0;
  else
    kept = std::min(unchanged - p, continuation_.size());
  if (prompt_intact_) {
    continuation_.resize(kept);
    continuation_.append(text, p + kept);
  } else {
    kept = continuation_.size();
  }
  // The text can get shorter: a character whose bytes came as byte-fallback tokens decodes
  // as U+FFFD until its last byte arrives, then as itself.
  safe_ = std::min(safe_, continuation_.size());
  // A stop string that ends inside the unchanged part would have stopped an earlier step.
  size_t cut = std::string::npos;
  for (const auto& s : opt_.stop) cut = std::min(cut, continuation_.find(s, kept >= s.size() ? kept - s.size() + 1 : 0));
  if (cut != std::string::npos) {
    continuation_.resize(cut);
    stats_.stopped = GenerateStats::Stop::stop_string;
    finished_ = true;
    safe_ = continuation_.size();
    return std::nullopt;
  }
  size_t hold = 0;  // the longest tail that is a stop string's beginning
  for (const auto& s : opt_.stop)
    for (size_t len = std::min(s.size() - 1, continuation_.size()); len > hold; --len)
      if (continuation_.compare(continuation_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  safe_ = std::max(safe_, continuation_.size() - hold);
  // The token limit, or the context: feeding this token leaves no position for another.
  if (stats_.generated_tokens >= opt_.max_tokens || int64_t(ids_.size()) >= context_) {
    stats_.stopped = stats_.generated_tokens >= opt_.max_tokens ? GenerateStats::Stop::limit
                                                                 : GenerateStats::Stop::context;
    finished_ = true;
    safe_ = continuation_.size();
  }
  return next;
}

void Generation::cancel() {
  finished_ = true;
  if (continuation_.size() > shown_) continuation_.resize(shown_);
  safe_ = continuation_.size();
}

namespace {

// Where a UTF-8 character that `text[0, end)` cuts in two starts (end when none is cut):
// its lead byte says how many continuation bytes must follow.
size_t complete_utf8_end(const std::string& text, size_t end) {
  for (size_t back = 1; back <= 3 && back <= end; ++back) {
    const auto c = static_cast<unsigned char>(text[end - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return len > back ? end - back : end;
  }
  return end;
}

}  // namespace

std::string Generation::take_text() {
  // A character split across tokens waits for its last byte (unless the text has ended):
  // cut in the middle, or decoded as a trailing U+FFFD that the next byte may complete.
  size_t end = std::min(safe_, continuation_.size());
  if (!finished_) {
    end = complete_utf8_end(continuation_, end);
    static const std::string replacement = "\xEF\xBF\xBD";
    while (end >= shown_ + 3 && continuation_.compare(end - 3, 3, replacement) == 0) end -= 3;
  }
  if (end <= shown_) return {};
  std::string out = continuation_.substr(shown_, end - shown_);
  shown_ = end;
  return out;
}

}  // namespace moepp
