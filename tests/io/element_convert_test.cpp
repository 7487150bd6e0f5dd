// convert_elements against the value each stored element stands for, element by element:
// every dtype, runs that span several of its thread blocks with an odd tail, and a source
// that starts off any alignment (as tensors inside a mapped file do).
#include "io/element_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"

using namespace moepp;

namespace {

constexpr int64_t kCount = (int64_t(3) << 16) + 7;  // three blocks and a tail

// Stored bytes of kCount elements at 1 byte past an aligned address, and what they mean.
struct Stored {
  std::vector<uint8_t> bytes;
  std::vector<long double> values;  // exact for every int64 too
  const uint8_t* data() const { return bytes.data() + 1; }
};

template <typename S, typename Meaning>
Stored make(Rng& rng, Meaning meaning) {
  Stored s;
  s.bytes.assign(1 + size_t(kCount) * sizeof(S), 0);
  for (int64_t i = 0; i < kCount; ++i) {
    S v;
    uint64_t r = rng.next_u64();
    std::memcpy(&v, &r, sizeof v);
    std::memcpy(s.bytes.data() + 1 + size_t(i) * sizeof(S), &v, sizeof v);
    s.values.push_back((long double)meaning(v));
  }
  return s;
}

template <typename T>
void expect_converted(const Stored& s, DType dtype) {
  std::vector<T> out(static_cast<size_t>(kCount));
  convert_elements(s.data(), dtype, kCount, out.data());
  for (int64_t i = 0; i < kCount; ++i) {
    const long double want = s.values[size_t(i)];
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(double(out[size_t(i)]))) << dtype_name(dtype) << " element " << i;
      continue;
    }
    ASSERT_EQ(out[size_t(i)], T(want)) << dtype_name(dtype) << " element " << i;
  }
}

}  // namespace

TEST(ConvertElements, EveryStoredTypeWidensToWhatItsBitsMean) {
  Rng rng(17);
  // Bit patterns for floats: random bits make every exponent, infinities and NaNs included.
  const Stored f32 = make<float>(rng, [](float v) { return double(v); });
  const Stored bf = make<uint16_t>(rng, [](uint16_t b) {
    uint32_t u = uint32_t(b) << 16;  // bf16 is the top half of an f32
    float f;
    std::memcpy(&f, &u, 4);
    return double(f);
  });
  const Stored half = make<uint16_t>(rng, [](uint16_t h) {  // IEEE binary16, decoded by hand
    const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (exponent == 0x1f) return mantissa ? std::nan("") : sign * INFINITY;
    if (exponent == 0) return sign * std::ldexp(double(mantissa), -24);
    return sign * std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  });
  expect_converted<float>(f32, DType::f32);
  expect_converted<float>(bf, DType::bf16);
  expect_converted<float>(half, DType::f16);
  expect_converted<double>(bf, DType::bf16);
}

TEST(ConvertElements, IntegersKeepTheirValues) {
  Rng rng(3);
  const Stored i64 = make<int64_t>(rng, [](int64_t v) { return (long double)v; });
  const Stored i32 = make<int32_t>(rng, [](int32_t v) { return (long double)v; });
  expect_converted<int64_t>(i64, DType::i64);
  expect_converted<int32_t>(i32, DType::i32);
  expect_converted<int64_t>(i32, DType::i32);
  const Stored u8 = make<uint8_t>(rng, [](uint8_t v) { return double(v); });
  const Stored i8 = make<int8_t>(rng, [](int8_t v) { return double(v); });
  expect_converted<float>(u8, DType::u8);
  expect_converted<float>(i8, DType::i8);
  const Stored f64 = make<double>(rng, [](double v) { return v; });
  expect_converted<double>(f64, DType::f64);
}
