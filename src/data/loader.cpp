#include "data/loader.h"

#include "core/error.h"
#include "core/rng.h"

namespace moepp {

Loader::Loader(std::vector<int32_t> tokens, int64_t batch, int64_t seq, uint64_t seed)
    : tokens_(std::move(tokens)), batch_(batch), seq_(seq), seed_(seed) {
  MOEPP_CHECK(batch >= 1 && seq >= 1, "loader: batch ", batch, " and seq ", seq, " must be positive");
  const int64_t n_chunks = (int64_t(tokens_.size()) - 1) / seq;
  MOEPP_CHECK(n_chunks >= 1, "loader: ", tokens_.size(), " tokens are too few for one window of ", seq + 1);
  order_.resize(size_t(n_chunks));
  shuffle_epoch();
}

void Loader::shuffle_epoch() {
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = int64_t(i);
  Rng rng(seed_ * 0x9e3779b97f4a7c15ull + pos_.epoch);
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[size_t(rng.below(i))]);
}

void Loader::seek(const LoaderPosition& p) {
  MOEPP_CHECK(p.index <= order_.size(), "loader: position ", p.index, " is beyond the ", order_.size(), " chunks");
  pos_ = p;
  shuffle_epoch();
}

void Loader::next(std::vector<int32_t>& ids, std::vector<int32_t>& targets) {
  ids.resize(size_t(batch_ * seq_));
  targets.resize(size_t(batch_ * seq_));
  for (int64_t b = 0; b < batch_; ++b) {
    if (pos_.index >= order_.size()) {
      ++pos_.epoch;
      pos_.index = 0;
      shuffle_epoch();
    }
    const int64_t start = order_[size_t(pos_.index++)] * seq_;
    for (int64_t s = 0; s < seq_; ++s) {
      ids[size_t(b * seq_ + s)] = tokens_[size_t(start + s)];
      targets[size_t(b * seq_ + s)] = tokens_[size_t(start + s + 1)];
    }
  }
}

}  // namespace moepp
