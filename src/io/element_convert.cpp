#include "io/element_convert.h"

#include <algorithm>
#include <cstring>

#include "core/parallel.h"

namespace moepp {

namespace {

template <typename Stored, typename T, typename Widen>
void convert_run(const uint8_t* src, int64_t n, T* dst, Widen widen) {
  for (int64_t i = 0; i < n; ++i) {
    Stored v;
    std::memcpy(&v, src + size_t(i) * sizeof(Stored), sizeof(Stored));
    dst[i] = T(widen(v));
  }
}

template <typename T>
void convert_serial(const uint8_t* src, DType dtype, int64_t n, T* dst) {
  auto same = [](auto v) { return v; };
  switch (dtype) {
    case DType::f32: return convert_run<float>(src, n, dst, same);
    case DType::f64: return convert_run<double>(src, n, dst, same);
    case DType::bf16: return convert_run<uint16_t>(src, n, dst, [](uint16_t b) { return bf16_to_f32(bf16{b}); });
    case DType::f16: return convert_run<uint16_t>(src, n, dst, [](uint16_t h) { return f16_to_f32(h); });
    case DType::i64: return convert_run<int64_t>(src, n, dst, same);
    case DType::i32: return convert_run<int32_t>(src, n, dst, same);
    case DType::u8: return convert_run<uint8_t>(src, n, dst, same);
    case DType::i8: return convert_run<int8_t>(src, n, dst, same);
  }
}

}  // namespace

template <typename T>
void convert_elements(const uint8_t* src, DType dtype, int64_t n, T* dst) {
  constexpr int64_t kBlock = int64_t(1) << 16;  // 256 KB of f32 out: each thread streams long runs
  const size_t stored = dtype_size(dtype);
  parallel_for((n + kBlock - 1) / kBlock, [&](int64_t b) {
    const int64_t begin = b * kBlock;
    convert_serial(src + size_t(begin) * stored, dtype, std::min(kBlock, n - begin), dst + begin);
  });
}

template void convert_elements<float>(const uint8_t*, DType, int64_t, float*);
template void convert_elements<double>(const uint8_t*, DType, int64_t, double*);
template void convert_elements<int64_t>(const uint8_t*, DType, int64_t, int64_t*);
template void convert_elements<int32_t>(const uint8_t*, DType, int64_t, int32_t*);

}  // namespace moepp
