// safetensors: round trip, and one clear error per malformed header.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "test_util.h"

using namespace moepp;

namespace {
std::string tmp(const std::string& name) {
  return test::scratch_dir("moepp-st") + "/" + name;
}
// A file with the given JSON header and `data_bytes` zero bytes of data.
std::string with_header(const std::string& header, size_t data_bytes) {
  const std::string p = tmp("h.safetensors");
  std::ofstream out(p, std::ios::binary);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return p;
}
void expect_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile f(path);
    ADD_FAILURE() << "no error; expected " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  const std::string p = tmp("r.safetensors");
  const float f[] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  const uint16_t b[] = {0x3f80, 0xc000};  // bf16 1, -2
  const int64_t i[] = {-3, 9};
  write_safetensors(p, {{"f", DType::f32, {2, 3}, f}, {"b", DType::bf16, {2}, b}, {"i", DType::i64, {2}, i}},
                    {{"k", "v"}});
  SafetensorsFile s(p);
  EXPECT_EQ(s.meta("k"), "v");
  const auto tf = s.read<float>("f");
  EXPECT_EQ(tf.shape(), (Shape{2, 3}));
  for (int k = 0; k < 6; ++k) EXPECT_EQ(tf[k], f[k]);
  const auto tb = s.read<double>("b");
  EXPECT_EQ(tb[0], 1.0);
  EXPECT_EQ(tb[1], -2.0);
  EXPECT_EQ(s.read<int64_t>("i")[0], -3);
  EXPECT_THROW(s.read<float>("missing"), Error);
}

TEST(SafetensorsBadInput, HeaderLongerThanTheFile) {
  const std::string p = tmp("x.safetensors");
  std::ofstream(p, std::ios::binary) << std::string("\xff\x00\x00\x00\x00\x00\x00\x00", 8) << "{}";
  expect_error(p, "runs past the end of the file");
}

TEST(SafetensorsBadInput, OffsetsPastTheData) {
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
               "run outside the data section of 4 bytes");
}

TEST(SafetensorsBadInput, OverlappingTensors) {
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               "overlap");
}

TEST(SafetensorsBadInput, ShapeThatDisagreesWithTheByteRange) {
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
               "8 bytes for shape of 3 f32 elements");
}

TEST(SafetensorsBadInput, UnknownDtypeAndBrokenJson) {
  expect_error(with_header(R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1), "unsupported dtype");
  expect_error(with_header(R"({"a":)", 0), "not valid JSON");
}
