// The q8_0 and q4 storage layouts in safetensors files, read and written here only
// (docs/quantization.md):
// - a q8_0 matrix NAME is stored as NAME, I8 [rows, cols], and NAME.q8_0_scales, F16
//   [rows, cols / 32], one scale per block of 32 columns of a row; the value at (r, c) is
//   q[r, c] * scales[r, c / 32];
// - a q4 matrix NAME is stored as NAME, U8 [rows, cols / 2] (byte i of a block's 16 holds
//   its value i in the low nibble and value i + 16 in the high one, each as q + 8), and
//   NAME.q4_scales, F16 [rows, cols / 32]; the value is (nibble - 8) * scale.
// Readers also take F32 scales (folders converted before 2026-12-05): loading them as a
// packed model rounds them to f16, as the kernels keep them (docs/quantization.md).
// kernels/quant.h keeps the same blocks in memory, so a file's arrays are a
// PackedMatrix's as they are.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace moepp {

constexpr int64_t kQ8FileBlock = 32;
inline const std::string kQ8ScalesSuffix = ".q8_0_scales";
inline const std::string kQ4ScalesSuffix = ".q4_scales";

// The two safetensors items of one q8_0 matrix (q: [rows, cols] int8, scales: [rows, cols / 32]);
// the arrays must outlive the write.
void add_q8_0_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                    const int8_t* q, const uint16_t* scales);
// The same for q4 (nibbles: [rows, cols / 2] bytes). Scales as f16 bits.
void add_q4_items(std::vector<SafetensorsWriteItem>& items, const std::string& name, int64_t rows, int64_t cols,
                  const uint8_t* nibbles, const uint16_t* scales);

// q holds NAME's int8 values widened to f32; multiplies each by its block's scale after
// checking the shapes (file names the file in errors).
void apply_q8_0_scales(const std::string& file, const std::string& name, const Tensor<float>& scales,
                       Tensor<float>& q);

// bytes holds NAME's q4 bytes widened to f32 ([rows, cols / 2]); returns the matrix
// [rows, cols] they and the scales stand for, after checking the shapes.
Tensor<float> expand_q4(const std::string& file, const std::string& name, const Tensor<float>& bytes,
                        const Tensor<float>& scales);

}  // namespace moepp
