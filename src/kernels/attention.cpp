#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

namespace {
void check_shape(const AttentionShape& s) {
  MOEPP_CHECK(s.q_heads > 0 && s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
              "attention: q_heads ", s.q_heads, " is not a multiple of kv_heads ", s.kv_heads);
}
}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs,
                       const AttentionShape& s) {
  check_shape(s);
  const int64_t Tn = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim;
  const int64_t group = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(hd));
  parallel_for(s.batch * Hq, [&](int64_t bh) {
    const int64_t b = bh / Hq, h = bh % Hq, kvh = h / group;
    T* P = probs + bh * Tn * Tn;
    for (int64_t i = 0; i < Tn; ++i) {
      const T* qi = q + ((b * Tn + i) * Hq + h) * hd;
      T* Pi = P + i * Tn;
      T mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        const T* kj = k + ((b * Tn + j) * Hkv + kvh) * hd;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < hd; ++d) dot += qi[d] * kj[d];
        Pi[j] = dot * scale;
        mx = std::max(mx, Pi[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += (Pi[j] = std::exp(Pi[j] - mx));
      const T inv = T(1) / sum;
      for (int64_t j = 0; j <= i; ++j) Pi[j] *= inv;
      std::fill(Pi + i + 1, Pi + Tn, T(0));
      T* oi = out + ((b * Tn + i) * Hq + h) * hd;
      std::fill(oi, oi + hd, T(0));
      for (int64_t j = 0; j <= i; ++j) {
        const T* vj = v + ((b * Tn + j) * Hkv + kvh) * hd;
        const T pij = Pi[j];
#pragma omp simd
        for (int64_t d = 0; d < hd; ++d) oi[d] += pij * vj[d];
      }
    }
  });
}

template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                        T* dq, T* dk, T* dv, const AttentionShape& s) {
  check_shape(s);
  const int64_t Tn = s.seq, Hq = s.q_heads, Hkv = s.kv_heads, hd = s.head_dim;
  const int64_t group = Hq / Hkv;
  const T scale = T(1) / std::sqrt(T(hd));
  // One task per (batch, kv head): every q head of the group writes the same dk/dv rows.
  parallel_for(s.batch * Hkv, [&](int64_t bk) {
    const int64_t b = bk / Hkv, kvh = bk % Hkv;
    std::vector<T> dS(static_cast<size_t>(Tn));
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      const T* P = probs + (b * Hq + h) * Tn * Tn;
      for (int64_t i = 0; i < Tn; ++i) {
        const T* Pi = P + i * Tn;
        const T* doi = dout + ((b * Tn + i) * Hq + h) * hd;
        const T* qi = q + ((b * Tn + i) * Hq + h) * hd;
        T* dqi = dq + ((b * Tn + i) * Hq + h) * hd;
        T dot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          const T* vj = v + ((b * Tn + j) * Hkv + kvh) * hd;
          T* dvj = dv + ((b * Tn + j) * Hkv + kvh) * hd;
          T dp = 0;
          const T pij = Pi[j];
#pragma omp simd reduction(+ : dp)
          for (int64_t d = 0; d < hd; ++d) {
            dp += doi[d] * vj[d];
            dvj[d] += pij * doi[d];
          }
          dS[size_t(j)] = dp;
          dot += Pi[j] * dp;
        }
        for (int64_t j = 0; j <= i; ++j) {
          const T ds = Pi[j] * (dS[size_t(j)] - dot) * scale;
          const T* kj = k + ((b * Tn + j) * Hkv + kvh) * hd;
          T* dkj = dk + ((b * Tn + j) * Hkv + kvh) * hd;
#pragma omp simd
          for (int64_t d = 0; d < hd; ++d) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
          }
        }
      }
    }
  });
}

template void attention_forward<float>(const float*, const float*, const float*, float*, float*, const AttentionShape&);
template void attention_forward<double>(const double*, const double*, const double*, double*, double*, const AttentionShape&);
template void attention_backward<float>(const float*, const float*, const float*, const float*, const float*, float*, float*, float*, const AttentionShape&);
template void attention_backward<double>(const double*, const double*, const double*, const double*, const double*, double*, double*, double*, const AttentionShape&);

}  // namespace moepp
