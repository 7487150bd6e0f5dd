// Hugging Face folders in every layout moepp reads — pytorch_model.bin saved by torch.save
// (f32 and bf16), sharded .bin, sharded safetensors, and a Mixtral folder — give the
// logits of the PyTorch reference run on the weights as stored.
#include "model/hf_folder.h"

#include <gtest/gtest.h>

#include <map>

#include "infer/session.h"
#include "model/model_folder.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

// The token ids a fixture folder's reference logits were computed for.
std::vector<int32_t> reference_ids(const SafetensorsFile& expected) {
  const auto ids64 = expected.read<int64_t>("ids");
  return std::vector<int32_t>(ids64.data(), ids64.data() + ids64.numel());
}

class HfFolder : public ::testing::TestWithParam<const char*> {};

TEST_P(HfFolder, LogitsMatchTheReference) {
  const std::string dir = std::string(MOEPP_FIXTURES_DIR) + "/hf/" + GetParam();
  const LoadedModel m = load_model_folder(dir);
  const SafetensorsFile e(dir + "/expected.safetensors");
  const std::vector<int32_t> ids = reference_ids(e);
  ModelCache<float> cache;
  model_forward(m.config, m.params, ids.data(), 1, int64_t(ids.size()), cache);
  EXPECT_LT(rel_error(cache.logits, e.read<double>("logits")), 1e-5);
}

// The streaming loader (one tensor at a time, packed at once) gives the same logits through
// the inference session; a folder stored in bf16 packs losslessly as bf16, so its packed
// logits must match the reference as closely as the f32 load does.
TEST_P(HfFolder, StreamedPackedLoadMatchesTheReference) {
  const std::string dir = std::string(MOEPP_FIXTURES_DIR) + "/hf/" + GetParam();
  const SafetensorsFile e(dir + "/expected.safetensors");
  const std::vector<int32_t> ids = reference_ids(e);
  std::vector<WeightType> types = {WeightType::f32};
  if (std::string(GetParam()).find("bf16") != std::string::npos) types.push_back(WeightType::bf16);
  for (WeightType t : types) {
    const auto packed = load_packed_model_folder(dir, t);
    Session<float> s(*packed, int64_t(ids.size()));
    Tensor<float> logits;
    s.append(ids.data(), int64_t(ids.size()), logits);
    // Many rows of bf16 weights compute with bf16 activations on a bf16 CPU (quant.h);
    // token by token they take the f32-activation kernel, which must match as f32 does.
    const int64_t n = int64_t(ids.size());
    EXPECT_LT(rel_error(logits, e.read<double>("logits")),
              packed_products_use_bf16(t, n) ? kBf16ActivationTolerance : 1e-5)
        << weight_type_name(t);
    Session<float> one_by_one(*packed, n);
    Tensor<float> row;
    Tensor<float> rows({n, logits.numel() / n});
    for (int64_t i = 0; i < n; ++i) {
      one_by_one.append(ids.data() + i, 1, row);
      std::copy(row.data(), row.data() + row.numel(), rows.data() + i * row.numel());
    }
    EXPECT_LT(rel_error(rows, e.read<double>("logits")), 1e-5) << weight_type_name(t) << " token by token";
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, HfFolder,
                         ::testing::Values("released_bin_f32", "released_bin_bf16", "interval2_bin_sharded",
                                           "interval2_st_sharded", "interval2_bin_bf16", "mixtral"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

TEST(HfFolderConfig, MixtralLoadsAsAVanillaMoe) {
  const ModelConfig c = read_hf_config(std::string(MOEPP_FIXTURES_DIR) + "/hf/mixtral");
  const MoeConfig m = c.layer_moe();
  EXPECT_EQ(m.num_ffn, 4);
  EXPECT_EQ(m.num_zero_compute(), 0);
  EXPECT_EQ(m.gate_weights, GateWeights::mixtral);
  EXPECT_EQ(m.input_scale(), 1);
  EXPECT_FALSE(c.gating_residual);
  EXPECT_FALSE(m.two_layer_router);
}

// `moepp convert` writes a moepp folder that loads back to the same logits (f32: exactly;
// bf16: within bf16 rounding of the weights).
TEST(ConvertCommand, MixtralFolderToF32AndBf16Safetensors) {
  const std::string in = std::string(MOEPP_FIXTURES_DIR) + "/hf/mixtral";
  const LoadedModel ref = load_model_folder(in);
  const SafetensorsFile e(in + "/expected.safetensors");
  const std::vector<int32_t> ids = reference_ids(e);
  ModelCache<float> want;
  model_forward(ref.config, ref.params, ids.data(), 1, int64_t(ids.size()), want);
  const std::string dir = scratch_dir("moepp-convert");
  for (const char* dtype : {"f32", "bf16"}) {
    const std::string out = dir + "/" + dtype;
    const std::string cmd = std::string(MOEPP_CLI) + " convert --in " + in + " --out " + out + " --dtype " + dtype;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const LoadedModel m = load_model_folder(out);
    ModelCache<float> got;
    model_forward(m.config, m.params, ids.data(), 1, int64_t(ids.size()), got);
    if (std::string(dtype) == "f32") {
      EXPECT_EQ(rel_error(got.logits, want.logits), 0.0);
    } else {
      EXPECT_GT(rel_error(got.logits, want.logits), 0.0);
      EXPECT_LT(rel_error(got.logits, want.logits), 2e-2);
    }
  }
  // Loaded as bf16, a folder's bf16 values are the packed ones as stored: the same as
  // widening to f32 and rounding back. Checked on the converted (MoE++-named) folder and
  // on the Mixtral fixture rewritten in bf16 under its own names, where an expert's
  // up_proj joins w1 and w3.
  const std::string mixtral_bf16 = dir + "/mixtral_bf16";
  // poison: one weight of layer 0's expert 1 w3 (the second half of its up_proj) made inf.
  const auto write_mixtral_bf16 = [&](const std::string& out, bool poison) {
    const SafetensorsFile f(in + "/model.safetensors");
    std::vector<SafetensorsWriteItem> items;
    std::vector<std::vector<uint16_t>> halves;  // (moving the inner vectors keeps their data)
    for (const auto& [name, e] : f.entries()) {
      const Tensor<float> t = f.read<float>(name);
      halves.emplace_back(size_t(t.numel()));
      for (int64_t i = 0; i < t.numel(); ++i) halves.back()[size_t(i)] = f32_to_bf16(t[i]).bits;
      if (poison && name == "model.layers.0.block_sparse_moe.experts.1.w3.weight")
        halves.back()[size_t(2 * e.shape[1] + 3)] = 0x7F80;  // row 2, column 3: +inf
      items.push_back({name, DType::bf16, e.shape, halves.back().data()});
    }
    make_dirs(out);
    write_safetensors(out + "/model.safetensors", items);
    copy_file_atomic(in + "/config.json", out + "/config.json");
  };
  write_mixtral_bf16(mixtral_bf16, false);
  write_mixtral_bf16(dir + "/poisoned", true);
  // Taken as stored, the matrix is checked as stored: the inf is named at its row in the
  // joined up_proj (w3 follows w1's 12 rows), in the words of the bf16 copy.
  expect_error_mentioning([&] { load_packed_model_folder(dir + "/poisoned", WeightType::bf16); },
                          "experts.1.up_proj.weight holds a non-finite weight at row 14, column 3");
  for (const std::string& folder : {dir + "/bf16", mixtral_bf16}) {
    const auto direct = load_packed_model_folder(folder, WeightType::bf16);
    LoadedModel plain = load_model_folder(folder);
    const auto through_f32 = PackedModel::pack(plain.config, std::move(plain.params), WeightType::bf16);
    std::map<std::string, std::vector<uint16_t>> want_bits;
    through_f32->for_each_packed([&](const std::string& name, const PackedMatrix& p) { want_bits[name] = p.bf16.values(); });
    size_t matrices = 0;
    direct->for_each_packed([&](const std::string& name, const PackedMatrix& p) {
      EXPECT_EQ(p.type, WeightType::bf16) << name;
      EXPECT_EQ(p.bf16.values(), want_bits[name]) << folder << ": " << name;
      // Used in place from the mapped file, except a Mixtral expert's joined w1 and w3.
      const bool joined = folder == mixtral_bf16 && name.find("experts") != std::string::npos &&
                          name.find("up_proj") != std::string::npos;
      EXPECT_EQ(p.bf16.borrowed(), !joined) << folder << ": " << name;
      ++matrices;
    });
    EXPECT_EQ(matrices, want_bits.size());
    EXPECT_GT(matrices, 10u);
  }
}

namespace {

// A tiny MoE++ model with large random weights, saved as DIR/f32 and converted by the CLI
// to DIR/OUT with --dtype DTYPE; returns its weights.
ModelParams<float> tiny_folder_converted(const std::string& dir, const std::string& out, const std::string& dtype,
                                         uint64_t seed) {
  ModelConfig cfg = ModelConfig::preset("tiny", 64);  // hidden 32: quantized rows; FFN 48: down stays f32
  auto w = ModelParams<float>::zeros(cfg);
  Rng rng(seed);
  cfg.initializer_range = 0.2;
  w.init(cfg, rng);
  save_model_folder(dir + "/f32", cfg, w);
  const std::string cmd =
      std::string(MOEPP_CLI) + " convert --in " + dir + "/f32 --out " + dir + "/" + out + " --dtype " + dtype;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return w;
}

// The logits of a fixed prompt through a session on the folder packed as `type`.
Tensor<float> packed_logits(const std::string& folder, WeightType type) {
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
  const auto m = load_packed_model_folder(folder, type);
  Session<float> s(*m, int64_t(ids.size()));
  Tensor<float> l;
  s.append(ids.data(), int64_t(ids.size()), l);
  return l;
}

// The largest |original - stored| over a matrix, and the largest |original| (amax).
std::pair<double, double> worst_and_amax(const Tensor<float>& orig, const Tensor<float>& stored) {
  double worst = 0, amax = 0;
  for (int64_t i = 0; i < orig.numel(); ++i) {
    worst = std::max(worst, double(std::fabs(orig[i] - stored[i])));
    amax = std::max(amax, double(std::fabs(orig[i])));
  }
  return {worst, amax};
}

}  // namespace

// `moepp convert --dtype q8_0` stores the packed matrices as int8 + per-32 scales: a model
// read back from it packs (as q8_0) to the logits of the original packed as q8_0 - the
// stored blocks requantize to themselves - and the file is about 1.125/4 of the f32 one
// for the packed matrices.
TEST(ConvertCommand, Q8_0FolderRoundTripsThroughThePackedLoader) {
  const std::string dir = scratch_dir("moepp-q8");
  const auto w = tiny_folder_converted(dir, "q8", "q8_0", 9);
  const Tensor<float> a = packed_logits(dir + "/f32", WeightType::q8_0), b = packed_logits(dir + "/q8", WeightType::q8_0);
  EXPECT_LT(rel_error(b, a), 1e-6);
  {  // Read as q8_0, the folder's blocks are the packed matrices, bit for bit.
    const auto from_f32 = load_packed_model_folder(dir + "/f32", WeightType::q8_0);
    const auto from_q8 = load_packed_model_folder(dir + "/q8", WeightType::q8_0);
    EXPECT_EQ(from_q8->layers[1].wq.q.values(), from_f32->layers[1].wq.q.values());
    EXPECT_TRUE(from_q8->layers[1].wq.q.borrowed()) << "used in place from the mapped file";
    EXPECT_FALSE(from_f32->layers[1].wq.q.borrowed()) << "quantized on load";
    EXPECT_EQ(from_q8->layers[1].wq.scales, from_f32->layers[1].wq.scales);
    EXPECT_EQ(from_q8->packed_bytes(), from_f32->packed_bytes());
  }
  const SafetensorsFile q(dir + "/q8/model.safetensors");
  EXPECT_EQ(q.entry("model.layers.0.self_attn.q_proj.weight").dtype, DType::i8);
  EXPECT_EQ(q.entry("model.layers.0.self_attn.q_proj.weight.q8_0_scales").shape, (std::vector<int64_t>{32, 1}));
  EXPECT_EQ(q.entry("model.layers.0.self_attn.q_proj.weight.q8_0_scales").dtype, DType::f16);
  EXPECT_EQ(q.entry("model.layers.0.mlp.moe.gate.wg.weight").dtype, DType::f32);  // routers stay f32
  // Read as a plain f32 model (eval, train): the dequantized weights, close to the originals.
  const LoadedModel back = load_model_folder(dir + "/q8");
  const auto [worst, amax] = worst_and_amax(w.layers[1].wq, back.params.layers[1].wq);
  EXPECT_GT(worst, 0.0);
  EXPECT_LE(worst, amax / 127 / 2 * 1.001);
}

// `moepp convert --dtype q4` the same way: 4-bit values two to a byte + per-32 scales; the
// stored blocks requantize to themselves, a plain f32 load sees the dequantized weights
// (within one step, |peak| / 8, of the originals), and a scales tensor of the wrong shape
// is refused naming the file and the tensor.
TEST(ConvertCommand, Q4FolderRoundTripsThroughThePackedLoader) {
  const std::string dir = scratch_dir("moepp-q4");
  const auto w = tiny_folder_converted(dir, "q4", "q4", 10);
  const Tensor<float> a = packed_logits(dir + "/f32", WeightType::q4), b = packed_logits(dir + "/q4", WeightType::q4);
  EXPECT_LT(rel_error(b, a), 1e-6);
  {  // Read as q4, the folder's blocks are the packed matrices, bit for bit.
    const auto from_f32 = load_packed_model_folder(dir + "/f32", WeightType::q4);
    const auto from_q4 = load_packed_model_folder(dir + "/q4", WeightType::q4);
    EXPECT_EQ(from_q4->layers[1].wq.nibbles.values(), from_f32->layers[1].wq.nibbles.values());
    EXPECT_TRUE(from_q4->layers[1].wq.nibbles.borrowed()) << "used in place from the mapped file";
    EXPECT_EQ(from_q4->layers[1].wq.scales, from_f32->layers[1].wq.scales);
    EXPECT_EQ(from_q4->packed_bytes(), from_f32->packed_bytes());
  }
  const SafetensorsFile q(dir + "/q4/model.safetensors");
  const std::string wq = "model.layers.0.self_attn.q_proj.weight";
  EXPECT_EQ(q.entry(wq).dtype, DType::u8);
  EXPECT_EQ(q.entry(wq).shape, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(q.entry(wq + ".q4_scales").shape, (std::vector<int64_t>{32, 1}));
  EXPECT_EQ(q.entry(wq + ".q4_scales").dtype, DType::f16);
  EXPECT_EQ(q.entry("model.layers.0.mlp.moe.gate.wg.weight").dtype, DType::f32);
  EXPECT_NE(read_regular_file(dir + "/q4/config.json", 1 << 20).find("\"quant_method\": \"moepp_q4\""), std::string::npos);
  const LoadedModel back = load_model_folder(dir + "/q4");
  const auto [worst, amax] = worst_and_amax(w.layers[1].wq, back.params.layers[1].wq);
  EXPECT_GT(worst, amax / 127);  // coarser than q8_0
  EXPECT_LE(worst, amax / 8 * 1.001);
  // The folder rewritten with q_proj of layer 0 as codes 9 (value +1) and scales 1: read as
  // q4, the blocks are taken as stored (quantizing their values again would give scales
  // -1/8 and codes 0), from F32 scales (older folders) and F16 ones; then scales tensors of
  // the wrong shape, or with the scale of row 5 beyond f16's range or infinite, refused
  // naming the file, the tensor, the value and where it is.
  std::vector<SafetensorsWriteItem> items;
  std::vector<std::vector<uint8_t>> bytes;  // (moving the inner vectors keeps their data)
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<uint16_t>> halves;
  const auto rewrite = [&](const std::vector<int64_t>& scales_shape, DType scales_dtype, float row5 = 1.0f) {
    items.clear();
    for (const auto& [name, e] : q.entries()) {
      if (name == wq + ".q4_scales") {
        floats.emplace_back(size_t(scales_shape[0] * scales_shape[1]), 1.0f);
        floats.back()[5 * size_t(scales_shape[1])] = row5;
        halves.emplace_back(floats.back().size());
        for (size_t i = 0; i < halves.back().size(); ++i) halves.back()[i] = f32_to_f16(floats.back()[i]);
        items.push_back({name, scales_dtype, scales_shape,
                         scales_dtype == DType::f16 ? static_cast<const void*>(halves.back().data())
                                                    : static_cast<const void*>(floats.back().data())});
      } else if (name == wq) {
        bytes.emplace_back(32 * 16, uint8_t(0x99));
        items.push_back({name, DType::u8, e.shape, bytes.back().data()});
      } else if (e.dtype == DType::u8) {
        const Tensor<float> t = q.read<float>(name);
        bytes.emplace_back(t.data(), t.data() + t.numel());
        items.push_back({name, DType::u8, e.shape, bytes.back().data()});
      } else {
        const Tensor<float> t = q.read<float>(name);
        floats.emplace_back(t.data(), t.data() + t.numel());
        items.push_back({name, DType::f32, e.shape, floats.back().data()});
      }
    }
    make_dirs(dir + "/bad");
    write_safetensors(dir + "/bad/model.safetensors", items, {});
    copy_file_atomic(dir + "/q4/config.json", dir + "/bad/config.json");
  };
  for (DType scales_dtype : {DType::f32, DType::f16}) {  // (F32 as folders converted before 2026-12-05 hold them)
    rewrite({32, 1}, scales_dtype);
    const auto stored = load_packed_model_folder(dir + "/bad", WeightType::q4);
    EXPECT_EQ(stored->layers[0].wq.nibbles.values(), std::vector<uint8_t>(32 * 16, 0x99));
    EXPECT_EQ(std::vector<uint16_t>(stored->layers[0].wq.scales.begin(), stored->layers[0].wq.scales.end()),
              std::vector<uint16_t>(32, f32_to_f16(1.0f)));
    rewrite({32, 2}, scales_dtype);
    expect_error_mentioning([&] { load_packed_model_folder(dir + "/bad", WeightType::q4); },
                            "q_proj.weight.q4_scales has shape [32, 2], expected [32, 1]");
  }
  rewrite({32, 1}, DType::f32, 1e6f);
  expect_error_mentioning([&] { load_packed_model_folder(dir + "/bad", WeightType::q4); },
                          "q_proj.weight.q4_scales holds a scale 1e+06 at row 5, block 0, not finite or beyond f16's range");
  rewrite({32, 1}, DType::f16, INFINITY);
  expect_error_mentioning([&] { load_packed_model_folder(dir + "/bad", WeightType::q4); },
                          "q_proj.weight.q4_scales holds a scale inf at row 5, block 0, not finite or beyond f16's range");
}
