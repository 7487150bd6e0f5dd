#include "kernels/embedding.h"

#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

namespace {
void check_ids(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t t = 0; t < n; ++t)
    MOEPP_CHECK(ids[t] >= 0 && ids[t] < vocab, "token id ", ids[t], " at position ", t,
                " is outside the vocabulary [0, ", vocab, ")");
}
}  // namespace

template <typename T>
void embedding_forward(const T* table, int64_t vocab, int64_t D, const int32_t* ids,
                       int64_t n_tokens, T* out) {
  check_ids(ids, n_tokens, vocab);
  parallel_for(n_tokens, [&](int64_t t) {
    std::memcpy(out + t * D, table + int64_t(ids[t]) * D, size_t(D) * sizeof(T));
  }, 64);
}

template <typename T>
void embedding_backward(const int32_t* ids, int64_t n_tokens, const T* dout, T* dtable,
                        int64_t vocab, int64_t D) {
  check_ids(ids, n_tokens, vocab);
  // Repeated ids would race if split by token; split by column blocks instead.
  const int64_t block = 64;
  parallel_for((D + block - 1) / block, [&](int64_t b) {
    const int64_t j0 = b * block, j1 = std::min(D, j0 + block);
    for (int64_t t = 0; t < n_tokens; ++t) {
      T* row = dtable + int64_t(ids[t]) * D;
      const T* g = dout + t * D;
      for (int64_t j = j0; j < j1; ++j) row[j] += g[j];
    }
  });
}

template void embedding_forward<float>(const float*, int64_t, int64_t, const int32_t*, int64_t, float*);
template void embedding_forward<double>(const double*, int64_t, int64_t, const int32_t*, int64_t, double*);
template void embedding_backward<float>(const int32_t*, int64_t, const float*, float*, int64_t, int64_t);
template void embedding_backward<double>(const int32_t*, int64_t, const double*, double*, int64_t, int64_t);

}  // namespace moepp
