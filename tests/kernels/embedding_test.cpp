#include "kernels/embedding.h"

#include "core/error.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(Embedding, ForwardGathersRowsBackwardAddsRepeatedIds) {
  Rng rng(1);
  const int64_t V = 6, D = 70;  // D > 64 spans two column blocks in the backward
  auto table = random_tensor<double>({V, D}, rng);
  std::vector<int32_t> ids = {3, 0, 3, 5};
  Tensor<double> out({4, D});
  embedding_forward(table.data(), V, D, ids.data(), 4, out.data());
  for (int64_t t = 0; t < 4; ++t)
    for (int64_t j = 0; j < D; ++j) EXPECT_EQ(out[t * D + j], table[ids[size_t(t)] * D + j]);
  auto dout = random_tensor<double>({4, D}, rng);
  Tensor<double> dtable({V, D});
  embedding_backward(ids.data(), 4, dout.data(), dtable.data(), V, D);
  for (int64_t j = 0; j < D; ++j) {
    EXPECT_DOUBLE_EQ(dtable[3 * D + j], dout[0 * D + j] + dout[2 * D + j]);
    EXPECT_DOUBLE_EQ(dtable[0 * D + j], dout[1 * D + j]);
    EXPECT_EQ(dtable[1 * D + j], 0.0);
  }
}

TEST(Embedding, OutOfVocabularyIdIsAnError) {
  Tensor<float> table({4, 2}), out({1, 2});
  std::vector<int32_t> ids = {4};
  EXPECT_THROW(embedding_forward(table.data(), 4, 2, ids.data(), 1, out.data()), Error);
  ids[0] = -1;
  EXPECT_THROW(embedding_forward(table.data(), 4, 2, ids.data(), 1, out.data()), Error);
}
