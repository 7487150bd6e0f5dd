#include "kernels/linear.h"

#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm.h"

namespace moepp {

template <typename T>
void linear(const MatrixView<T>& W, const T* x, int64_t M, int64_t ldx, T* y, int64_t ldy, bool accumulate) {
  if (M == 0) return;
  if (W.packed) {
    if constexpr (std::is_same_v<T, float>) {
      packed_linear(x, M, ldx, *W.packed, y, ldy, accumulate);
      return;
    } else {
      fail("linear: packed weights take f32 activations only");
    }
  }
  MOEPP_CHECK(W.dense, "linear: empty weight view");
  gemm<T>(Trans::N, Trans::T, M, W.rows, W.cols, T(1), x, ldx, W.dense, W.cols, T(accumulate ? 1 : 0), y, ldy);
}

template <typename T>
void gather_rows(const MatrixView<T>& W, const int32_t* ids, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i)
    MOEPP_CHECK(ids[i] >= 0 && ids[i] < W.rows, "token id ", ids[i], " at position ", i,
                " is outside the vocabulary [0, ", W.rows, ")");
  if constexpr (!std::is_same_v<T, float>) MOEPP_CHECK(W.dense, "gather_rows: packed weights are f32 only");
  const int64_t D = W.cols;
  parallel_for(n, [&](int64_t i) {
    if (W.dense) {
      std::memcpy(out + i * D, W.dense + int64_t(ids[i]) * D, size_t(D) * sizeof(T));
    } else if constexpr (std::is_same_v<T, float>) {
      W.packed->unpack_rows(ids[i], 1, out + i * D);
    }
  }, 64);
}

template void linear<float>(const MatrixView<float>&, const float*, int64_t, int64_t, float*, int64_t, bool);
template void linear<double>(const MatrixView<double>&, const double*, int64_t, int64_t, double*, int64_t, bool);
template void gather_rows<float>(const MatrixView<float>&, const int32_t*, int64_t, float*);
template void gather_rows<double>(const MatrixView<double>&, const int32_t*, int64_t, double*);

}  // namespace moepp
