#include "io/quant_layout.h"

#include "core/error.h"

namespace moepp {

void add_q8_0_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                    const int8_t* q, const uint16_t* scales) {
  MOEPP_CHECK(cols % kQ8FileBlock == 0, "q8_0: ", name, " has ", cols, " columns, not a multiple of ", kQ8FileBlock);
  items.push_back({name, DType::i8, {rows, cols}, q});
  items.push_back({name + kQ8ScalesSuffix, DType::f16, {rows, cols / kQ8FileBlock}, scales});
}

void add_q4_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                  const uint8_t* nibbles, const uint16_t* scales) {
  MOEPP_CHECK(cols % kQ8FileBlock == 0, "q4: ", name, " has ", cols, " columns, not a multiple of ", kQ8FileBlock);
  items.push_back({name, DType::u8, {rows, cols / 2}, nibbles});
  items.push_back({name + kQ4ScalesSuffix, DType::f16, {rows, cols / kQ8FileBlock}, scales});
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

Tensor<float> expand_q4(const std::string& file, const std::string& name, const Tensor<float>& bytes,
                        const Tensor<float>& scales) {
  const Shape bs = bytes.shape();
  constexpr int64_t half = kQ8FileBlock / 2;  // bytes a block
  MOEPP_CHECK(bs.rank() == 2 && bs[1] % half == 0, file, ": q4 tensor ", name, " has shape ", bs.str(),
              "; it needs 2 dimensions, the last a multiple of ", half, " bytes");
  const int64_t rows = bs[0], cols = bs[1] * 2;
  MOEPP_CHECK((scales.shape() == Shape{rows, cols / kQ8FileBlock}), file, ": ", name, kQ4ScalesSuffix, " has shape ",
              scales.shape().str(), ", expected [", rows, ", ", cols / kQ8FileBlock, "] for ", name);
  Tensor<float> w(Shape{rows, cols});
  for (int64_t b = 0; b < rows * cols / kQ8FileBlock; ++b)
    for (int64_t i = 0; i < half; ++i) {
      const int v = int(bytes[b * half + i]);  // 0..255: read from U8
      w[b * kQ8FileBlock + i] = float((v & 0x0F) - 8) * scales[b];
      w[b * kQ8FileBlock + i + half] = float((v >> 4) - 8) * scales[b];
    }
  return w;
}

}  // namespace moepp
