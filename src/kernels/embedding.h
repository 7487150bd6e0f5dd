// Token embedding: out[t] = table[ids[t]]. Ids are validated against the vocabulary.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
void embedding_forward(const T* table, int64_t vocab, int64_t D, const int32_t* ids,
                       int64_t n_tokens, T* out);

// dtable[ids[t]] += dout[t].
template <typename T>
void embedding_backward(const int32_t* ids, int64_t n_tokens, const T* dout, T* dtable,
                        int64_t vocab, int64_t D);

}  // namespace moepp
