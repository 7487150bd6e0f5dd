// Loader: batches of B windows of S+1 tokens (inputs and their next-token targets) from a
// token array. Windows are the non-overlapping chunks of the array, visited in an order
// shuffled per epoch by a seeded RNG, so a (seed, position) pair fully determines every
// later batch: that pair is what a checkpoint stores to resume exactly.
#pragma once
#include <cstdint>
#include <vector>

namespace moepp {

struct LoaderPosition {
  uint64_t epoch = 0;
  uint64_t index = 0;  // next chunk within the epoch's order
};

class Loader {
 public:
  Loader(std::vector<int32_t> tokens, int64_t batch, int64_t seq, uint64_t seed);

  // Fills ids and targets, each [B * S].
  void next(std::vector<int32_t>& ids, std::vector<int32_t>& targets);

  LoaderPosition position() const { return pos_; }
  void seek(const LoaderPosition& p);
  int64_t chunks() const { return int64_t(order_.size()); }

 private:
  void shuffle_epoch();
  std::vector<int32_t> tokens_;
  int64_t batch_, seq_;
  uint64_t seed_;
  std::vector<int64_t> order_;
  LoaderPosition pos_;
};

}  // namespace moepp
