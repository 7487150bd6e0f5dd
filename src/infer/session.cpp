#include "infer/session.h"

#include "core/error.h"

namespace moepp {

template <typename T>
Session<T>::Session(const ModelConfig& cfg, const ModelParams<T>& params, int64_t max_len, KvDtype kv)
    : cfg_(cfg), weights_(DecoderWeights<T>::of(params)), cache_(cfg, max_len, kv) {}

template <typename T>
Session<T>::Session(const PackedModel& model, int64_t max_len, KvDtype kv)
  requires std::is_same_v<T, float>
    : cfg_(model.config), weights_(DecoderWeights<T>::of(model)), cache_(model.config, max_len, kv) {}

template <typename T>
void Session<T>::append(const int32_t* ids, int64_t n, Tensor<T>& logits, LogitRows which) {
  MOEPP_CHECK(n >= 1, "session: nothing to append");
  MOEPP_CHECK(length() + n <= cache_.capacity(), "session: ", length() + n, " tokens exceed the context of ",
              cache_.capacity());
  const SequenceStep<T> step{&cache_, ids, n};
  decoder_step(cfg_, weights_, std::span<const SequenceStep<T>>(&step, 1), scratch_, logits, which);
}

template class Session<float>;
template class Session<double>;

}  // namespace moepp
