// The q8_0 storage layout in safetensors files, read and written here only
// (docs/quantization.md): a q8_0 matrix NAME is stored as NAME, I8 [rows, cols], and
// NAME.q8_0_scales, F32 [rows, cols / 32], one scale per block of 32 columns of a row; the
// value at (r, c) is q[r, c] * scales[r, c / 32]. kernels/quant.h keeps the same blocks in
// memory, so a file's arrays are a PackedMatrix's as they are.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace moepp {

constexpr int64_t kQ8FileBlock = 32;
inline const std::string kQ8ScalesSuffix = ".q8_0_scales";

// The two safetensors items of one q8_0 matrix (q: [rows, cols] int8, scales: [rows, cols / 32]);
// the arrays must outlive the write.
void add_q8_0_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                    const int8_t* q, const float* scales);

// q holds NAME's int8 values widened to f32; multiplies each by its block's scale after
// checking the shapes (file names the file in errors).
void apply_q8_0_scales(const std::string& file, const std::string& name, const Tensor<float>& scales,
                       Tensor<float>& q);

}  // namespace moepp
