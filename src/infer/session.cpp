#include "infer/session.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace moepp {

template <typename T>
Session<T>::Session(const ModelConfig& cfg, const ModelParams<T>& params, int64_t max_len)
    : cfg_(cfg), w_(params), max_len_(max_len) {
  MOEPP_CHECK(max_len >= 1, "session: max_len must be positive");
  // The same limit, in the same words, as model_forward: the f32, bf16 and q8_0 paths
  // refuse a sequence the model was not built for alike.
  MOEPP_CHECK(max_len <= cfg.max_position_embeddings, "model: sequence of ", max_len,
              " tokens exceeds max_position_embeddings ", cfg.max_position_embeddings);
  const int64_t kvD = int64_t(cfg.num_key_value_heads) * cfg.head_dim();
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    k_.emplace_back(Shape{max_len, kvD});
    v_.emplace_back(Shape{max_len, kvD});
  }
  moe_.resize(size_t(cfg.num_hidden_layers));
  mlp_.resize(size_t(cfg.num_hidden_layers));
}

template <typename T>
Session<T>::Session(const PackedModel& model, int64_t max_len)
  requires std::is_same_v<T, float>
    : Session(model.config, model.rest, max_len) {
  packed_ = &model;
}

template <typename T>
void Session<T>::project(const Tensor<T>& dense, const PackedMatrix* packed, const T* x, int64_t n, T* y, int64_t ldy,
                         bool accumulate) const {
  if constexpr (std::is_same_v<T, float>) {
    if (packed_) {
      packed_linear(x, n, packed->cols, *packed, y, ldy, accumulate);
      return;
    }
  }
  const int64_t N = dense.shape()[0], K = dense.shape()[1];
  gemm<T>(Trans::N, Trans::T, n, N, K, T(1), x, K, dense.data(), K, T(accumulate ? 1 : 0), y, ldy);
}

template <typename T>
void Session<T>::append(const int32_t* ids, int64_t n, Tensor<T>& logits) {
  const auto& cfg = cfg_;
  const int64_t D = cfg.hidden_size, V = cfg.vocab_size, H = cfg.num_attention_heads;
  const int64_t Hkv = cfg.num_key_value_heads, hd = cfg.head_dim(), kvD = Hkv * hd, group = H / Hkv;
  MOEPP_CHECK(n >= 1, "session: nothing to append");
  MOEPP_CHECK(len_ + n <= max_len_, "session: ", len_ + n, " tokens exceed the context of ", max_len_);
  const int64_t p0 = len_;
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(p0 + i);
  const RopeConfig rope{cfg.rope_theta, cfg.rope_linear_factor};
  const MoeConfig mc = cfg.moe();
  const T scale = T(1) / std::sqrt(T(hd));

  Tensor<T> x({n, D}), a({n, D}), rstd({n}), q({n, D}), ctx({n, D}), out({n, D});
  if (packed_) {
    for (int64_t i = 0; i < n; ++i) {
      MOEPP_CHECK(ids[i] >= 0 && ids[i] < V, "session: token id ", ids[i], " outside the vocabulary of ", V);
      if constexpr (std::is_same_v<T, float>) packed_->embed.unpack_rows(ids[i], 1, x.data() + i * D);
    }
  } else {
    embedding_forward(w_.embed.data(), V, D, ids, n, x.data());
  }
  const T* z_prev = nullptr;
  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const auto& L = w_.layers[l];
    const PackedLayer* P = packed_ ? &packed_->layers[l] : nullptr;
    T* K = k_[l].data();
    T* Vc = v_[l].data();
    rmsnorm_forward(x.data(), L.input_norm.data(), a.data(), rstd.data(), n, D, T(cfg.rms_norm_eps));
    project(L.wq, P ? &P->wq : nullptr, a.data(), n, q.data(), D, false);
    project(L.wk, P ? &P->wk : nullptr, a.data(), n, K + p0 * kvD, kvD, false);
    project(L.wv, P ? &P->wv : nullptr, a.data(), n, Vc + p0 * kvD, kvD, false);
    rope_forward(q.data(), pos.data(), n, H, hd, rope);
    rope_forward(K + p0 * kvD, pos.data(), n, Hkv, hd, rope);
    // Each new token attends to every cached position up to its own.
    parallel_for(n * H, [&](int64_t ih) {
      const int64_t i = ih / H, h = ih % H, kvh = h / group, last = p0 + i;
      const T* qi = q.data() + (i * H + h) * hd;
      std::vector<T> sc(static_cast<size_t>(last + 1));
      T mx = -INFINITY;
      for (int64_t j = 0; j <= last; ++j) {
        const T* kj = K + j * kvD + kvh * hd;
        T d = 0;
        for (int64_t e = 0; e < hd; ++e) d += qi[e] * kj[e];
        sc[size_t(j)] = d * scale;
        mx = std::max(mx, sc[size_t(j)]);
      }
      T sum = 0;
      for (auto& s : sc) sum += (s = std::exp(s - mx));
      T* o = ctx.data() + (i * H + h) * hd;
      std::fill(o, o + hd, T(0));
      for (int64_t j = 0; j <= last; ++j) {
        const T p = sc[size_t(j)] / sum;
        const T* vj = Vc + j * kvD + kvh * hd;
        for (int64_t e = 0; e < hd; ++e) o[e] += p * vj[e];
      }
    });
    project(L.wo, P ? &P->wo : nullptr, ctx.data(), n, x.data(), D, true);  // x := h
    rmsnorm_forward(x.data(), L.post_norm.data(), a.data(), rstd.data(), n, D, T(cfg.rms_norm_eps));
    if (L.is_moe) {
      moe_forward(mc, L.moe, a.data(), n, cfg.gating_residual ? z_prev : nullptr, moe_[l], out.data());
      z_prev = moe_[l].router.z.data();
    } else if (P) {  // dense MLP on packed weights: [gate | up] -> SwiGLU -> down
      const int64_t I = cfg.intermediate_size;
      auto& c = mlp_[l];
      c.gu.fit({n, 2 * I});
      c.act.fit({n, I});
      project(L.gate, &P->gate, a.data(), n, c.gu.data(), 2 * I, false);
      project(L.up, &P->up, a.data(), n, c.gu.data() + I, 2 * I, false);
      swiglu_forward(c.gu.data(), c.act.data(), n, I);
      project(L.down, &P->down, c.act.data(), n, out.data(), D, false);
    } else {
      dense_mlp_forward(cfg, L, a.data(), n, mlp_[l], out.data());
    }
    for (int64_t i = 0; i < n * D; ++i) x[i] += out[i];
  }
  rmsnorm_forward(x.data(), w_.final_norm.data(), a.data(), rstd.data(), n, D, T(cfg.rms_norm_eps));
  logits.fit({n, V});
  project(w_.output_weights(), packed_ ? &packed_->output_weights() : nullptr, a.data(), n, logits.data(), V, false);
  len_ += n;
}

template <typename T>
std::vector<RoutingStats> Session<T>::last_routing() const {
  std::vector<RoutingStats> out;
  for (size_t l = 0; l < w_.layers.size(); ++l)
    if (w_.layers[l].is_moe) out.push_back(moe_[l].stats);
  return out;
}

template class Session<float>;
template class Session<double>;

}  // namespace moepp
