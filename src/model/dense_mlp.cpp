#include "model/dense_mlp.h"

#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/swiglu.h"

namespace moepp {

template <typename T>
void dense_mlp_forward(const ModelConfig& cfg, const LayerWeights<T>& w, const T* b, int64_t n,
                       DenseMlpCache<T>& c, T* out) {
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size;
  c.gu.fit({n, 2 * I});
  c.act.fit({n, I});
  linear(w.gate, b, n, D, c.gu.data(), 2 * I);
  linear(w.up, b, n, D, c.gu.data() + I, 2 * I);
  swiglu_forward(c.gu.data(), c.act.data(), n, I);
  linear(w.down, c.act.data(), n, I, out, D);
}

template <typename T>
void dense_mlp_backward(const ModelConfig& cfg, const LayerParams<T>& w, const T* b, int64_t n,
                        const DenseMlpCache<T>& c, const T* dout, T* db, LayerParams<T>& g) {
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size;
  Tensor<T> dact({n, I}), dgu({n, 2 * I});
  gemm<T>(Trans::N, Trans::N, n, I, D, T(1), dout, D, w.down.data(), I, T(0), dact.data(), I);
  gemm<T>(Trans::T, Trans::N, D, I, n, T(1), dout, D, c.act.data(), I, T(1), g.down.data(), I);
  swiglu_backward(c.gu.data(), dact.data(), dgu.data(), n, I);
  gemm<T>(Trans::T, Trans::N, I, D, n, T(1), dgu.data(), 2 * I, b, D, T(1), g.gate.data(), D);
  gemm<T>(Trans::T, Trans::N, I, D, n, T(1), dgu.data() + I, 2 * I, b, D, T(1), g.up.data(), D);
  gemm<T>(Trans::N, Trans::N, n, D, I, T(1), dgu.data(), 2 * I, w.gate.data(), D, T(1), db, D);
  gemm<T>(Trans::N, Trans::N, n, D, I, T(1), dgu.data() + I, 2 * I, w.up.data(), D, T(1), db, D);
}

template void dense_mlp_forward<float>(const ModelConfig&, const LayerWeights<float>&, const float*, int64_t, DenseMlpCache<float>&, float*);
template void dense_mlp_forward<double>(const ModelConfig&, const LayerWeights<double>&, const double*, int64_t, DenseMlpCache<double>&, double*);
template void dense_mlp_backward<float>(const ModelConfig&, const LayerParams<float>&, const float*, int64_t, const DenseMlpCache<float>&, const float*, float*, LayerParams<float>&);
template void dense_mlp_backward<double>(const ModelConfig&, const LayerParams<double>&, const double*, int64_t, const DenseMlpCache<double>&, const double*, double*, LayerParams<double>&);

}  // namespace moepp
