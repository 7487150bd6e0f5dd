// Element types moepp stores (f32, f64 for verification, bf16, f16, i64) and the bf16/f16
// conversions. bf16 is the upper half of an IEEE f32; conversion rounds to nearest even.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace moepp {

enum class DType { f32, f64, bf16, f16, i64, i32, u8, i8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

struct bf16 {
  uint16_t bits = 0;
};

inline float bf16_to_f32(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline bf16 f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t((u + rounding) >> 16)};
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // nearest even; beyond f16's range, inf
// f32_to_f16 of each of x[0, n) into out, 16 at a time where the CPU has AVX-512 (the same
// bits for every finite input; a NaN stays a NaN).
void f32_to_f16(const float* x, int64_t n, uint16_t* out);

// f16_to_f32 in one instruction where the CPU has F16C: the q8_0 and q4 kernels read a
// scale per block of 32 weights this way.
inline float f16_to_f32_fast(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

}  // namespace moepp
