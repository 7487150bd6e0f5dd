#include "io/q8_0_layout.h"

#include "core/error.h"

namespace moepp {

void add_q8_0_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                    const int8_t* q, const float* scales) {
  MOEPP_CHECK(cols % kQ8FileBlock == 0, "q8_0: ", name, " has ", cols, " columns, not a multiple of ", kQ8FileBlock);
  items.push_back({name, DType::i8, {rows, cols}, q});
  items.push_back({name + kQ8ScalesSuffix, DType::f32, {rows, cols / kQ8FileBlock}, scales});
}

void apply_q8_0_scales(const std::string& file, const std::string& name, const Tensor<float>& scales,
                       Tensor<float>& q) {
  const Shape qs = q.shape();
  MOEPP_CHECK(qs.rank() == 2 && qs[1] % kQ8FileBlock == 0, file, ": q8_0 tensor ", name, " has shape ", qs.str(),
              "; it needs 2 dimensions, the last a multiple of ", kQ8FileBlock);
  MOEPP_CHECK((scales.shape() == Shape{qs[0], qs[1] / kQ8FileBlock}), file, ": ", name, kQ8ScalesSuffix,
              " has shape ", scales.shape().str(), ", expected [", qs[0], ", ", qs[1] / kQ8FileBlock, "] for ", name);
  for (int64_t i = 0; i < q.numel(); ++i) q[i] *= scales[i / kQ8FileBlock];
}

}  // namespace moepp
