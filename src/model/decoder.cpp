#include "model/decoder.h"

#include <cstring>
#include <set>

#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"

namespace moepp {

template <typename T>
void decoder_step(const ModelConfig& cfg, const DecoderWeights<T>& w, std::span<const SequenceStep<T>> steps,
                  DecoderScratch<T>& s, Tensor<T>& logits, LogitRows which) {
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size;
  MOEPP_CHECK(!steps.empty(), "decoder: no sequence to step");
  std::set<const KvCache<T>*> seen;
  int64_t n = 0;
  for (const auto& st : steps) {
    MOEPP_CHECK(st.cache && st.n >= 1, "decoder: a sequence step without tokens");
    MOEPP_CHECK(seen.insert(st.cache).second, "decoder: a sequence appears twice in one step");
    MOEPP_CHECK(st.cache->dtype() == steps[0].cache->dtype(), "decoder: a step mixes ",
                kv_dtype_name(steps[0].cache->dtype()), " and ", kv_dtype_name(st.cache->dtype()), " KV caches");
    MOEPP_CHECK(st.cache->length() + st.n <= st.cache->capacity(), "decoder: ", st.cache->length() + st.n,
                " tokens exceed the sequence's context of ", st.cache->capacity());
    n += st.n;
  }
  s.positions.resize(size_t(n));
  s.row_caches.resize(size_t(n));
  s.x.fit({n, D});
  int64_t r = 0;
  for (const auto& st : steps) {
    gather_rows(w.embed, st.ids, st.n, s.x.data() + r * D);
    for (int64_t i = 0; i < st.n; ++i, ++r) {
      s.positions[size_t(r)] = int32_t(st.cache->length() + i);
      s.row_caches[size_t(r)] = st.cache;
    }
  }
  RowBatch<T> rows;
  rows.rows = n;
  rows.positions = s.positions.data();
  rows.caches = s.row_caches.data();

  // One LayerCache serves every layer; the router logits a MoE layer hands to the next
  // are copied out first, since the next MoE layer's router writes where they were.
  const int64_t E = cfg.num_experts();
  s.routing.clear();
  bool have_z = false;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const bool moe = w.layers[l].is_moe;
    const T* z_prev = moe && have_z && cfg.gating_residual ? s.z_carry.data() : nullptr;
    decoder_layer_forward(cfg, w.layers[l], int(l), rows, s.x.data(), z_prev, s.layer, s.x.data());
    if (moe) {
      s.z_carry.fit({n, E});
      std::memcpy(s.z_carry.data(), s.layer.moe.router.z.data(), size_t(n * E) * sizeof(T));
      have_z = true;
      s.routing.push_back(s.layer.moe.stats);
    }
  }
  for (const auto& st : steps) st.cache->advance(st.n);

  // Final norm and LM head over the rows that need logits.
  const T* final_rows = s.x.data();
  int64_t out_rows = n;
  if (which == LogitRows::last) {
    out_rows = int64_t(steps.size());
    s.last_rows.fit({out_rows, D});
    int64_t end = 0;
    for (size_t i = 0; i < steps.size(); ++i) {
      end += steps[i].n;
      std::memcpy(s.last_rows.data() + int64_t(i) * D, s.x.data() + (end - 1) * D, size_t(D) * sizeof(T));
    }
    final_rows = s.last_rows.data();
  }
  s.normed.fit({out_rows, D});
  s.rstd.fit({out_rows});
  rmsnorm_forward(final_rows, w.final_norm, s.normed.data(), s.rstd.data(), out_rows, D, T(cfg.rms_norm_eps));
  logits.fit({out_rows, V});
  linear(w.output, s.normed.data(), out_rows, D, logits.data(), V);
}

template void decoder_step<float>(const ModelConfig&, const DecoderWeights<float>&, std::span<const SequenceStep<float>>, DecoderScratch<float>&, Tensor<float>&, LogitRows);
template void decoder_step<double>(const ModelConfig&, const DecoderWeights<double>&, std::span<const SequenceStep<double>>, DecoderScratch<double>&, Tensor<double>&, LogitRows);

}  // namespace moepp
