#include "model/decoder_weights.h"

#include "core/error.h"

namespace moepp {

namespace {
template <typename T>
MatrixView<T> dense(const Tensor<T>& t) {
  if (t.numel() == 0) return {};
  return MatrixView<T>::of_dense(t.data(), t.dim(0), t.shape().rank() == 2 ? t.dim(1) : 1);
}
MatrixView<float> packed(const PackedMatrix& p) { return MatrixView<float>::of_packed(p); }

// The dense parts of a layer, the same whoever holds its matrices.
template <typename T>
LayerWeights<T> small_parts(const LayerParams<T>& L) {
  LayerWeights<T> w;
  w.input_norm = L.input_norm.data();
  w.post_norm = L.post_norm.data();
  w.is_moe = L.is_moe;
  if (L.is_moe) w.moe.params = &L.moe;
  return w;
}
}  // namespace

template <typename T>
DecoderWeights<T> DecoderWeights<T>::of(const ModelParams<T>& p) {
  DecoderWeights d;
  d.embed = dense(p.embed);
  for (const auto& L : p.layers) {
    LayerWeights<T> w = small_parts(L);
    w.wq = dense(L.wq);
    w.wk = dense(L.wk);
    w.wv = dense(L.wv);
    w.wo = dense(L.wo);
    if (L.is_moe) {
      w.moe = MoeWeights<T>::of(L.moe);
    } else {
      w.gate = dense(L.gate);
      w.up = dense(L.up);
      w.down = dense(L.down);
    }
    d.layers.push_back(std::move(w));
  }
  d.final_norm = p.final_norm.data();
  d.output = dense(p.output_weights());
  return d;
}

template <typename T>
DecoderWeights<T> DecoderWeights<T>::of(const PackedModel& m)
  requires std::is_same_v<T, float>
{
  MOEPP_CHECK(m.layers.size() == m.rest.layers.size(), "packed model: ", m.layers.size(), " packed layers for ",
              m.rest.layers.size(), " layers");
  DecoderWeights d;
  d.embed = packed(m.embed);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const auto& P = m.layers[l];
    LayerWeights<float> w = small_parts(m.rest.layers[l]);
    w.wq = packed(P.wq);
    w.wk = packed(P.wk);
    w.wv = packed(P.wv);
    w.wo = packed(P.wo);
    if (w.is_moe) {
      for (const auto& e : P.expert_up) w.moe.up.push_back(packed(e));
      for (const auto& e : P.expert_down) w.moe.down.push_back(packed(e));
    } else {
      w.gate = packed(P.gate);
      w.up = packed(P.up);
      w.down = packed(P.down);
    }
    d.layers.push_back(std::move(w));
  }
  d.final_norm = m.rest.final_norm.data();
  d.output = packed(m.output_weights());
  return d;
}

template struct DecoderWeights<float>;
template struct DecoderWeights<double>;

}  // namespace moepp
