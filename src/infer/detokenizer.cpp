#include "infer/detokenizer.h"

#include <algorithm>
#include <span>

namespace moepp {

namespace {

bool ends_in_replacement(const std::string& s) {
  static const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
  return s.size() >= 3 && s.compare(s.size() - 3, 3, replacement) == 0;
}

}  // namespace

Detokenizer::Detokenizer(const Tokenizer& tok, std::vector<int32_t> ids) : tok_(&tok), ids_(std::move(ids)) {
  decode_all();
}

size_t Detokenizer::decode_all() {
  std::string text = tok_->decode(ids_);
  const size_t unchanged = size_t(std::mismatch(text.begin(), text.begin() + std::min(text.size(), text_.size()),
                                                text_.begin()).first - text.begin());
  text_ = std::move(text);
  if (!ends_in_replacement(text_)) settle();
  return unchanged;
}

// Everything decoded so far is final: the next window starts at the last id whose text,
// counted from it, is not empty (most often the last id itself).
void Detokenizer::settle() {
  settled_ = text_.size();
  const size_t read = ids_.size();
  window_text_.clear();
  window_ = read;
  while (window_ > 0 && window_text_.empty() && read - window_ < 8) {
    --window_;
    window_text_ = tok_->decode(std::span<const int32_t>(ids_).subspan(window_, read - window_));
  }
}

size_t Detokenizer::push(int32_t id) {
  ids_.push_back(id);
  if (window_text_.empty()) return decode_all();
  const std::string window = tok_->decode(std::span<const int32_t>(ids_).subspan(window_));
  if (window.size() < window_text_.size() || window.compare(0, window_text_.size(), window_text_) != 0)
    return decode_all();
  const size_t unchanged = settled_;
  text_.resize(settled_);
  text_.append(window, window_text_.size());
  if (!ends_in_replacement(text_)) settle();
  return unchanged;
}

}  // namespace moepp
