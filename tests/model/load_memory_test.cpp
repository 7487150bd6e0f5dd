// Loading a model folder never holds its files: a 370 MB f32 folder loaded as q8_0 peaks
// within 10% + 200 MB of what the packed model keeps (issue 20's bound). The mapped
// file's pages count in the resident set once touched; the loader releases each tensor's
// pages after reading it, without which the peak is the whole file plus the model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "model/model_folder.h"
#include "model/packed_model.h"
#include "resident_memory.h"
#include "test_util.h"

using namespace moepp;
using namespace moepp::test;

TEST(LoadMemory, PeakStaysNearThePackedSize) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer keeps freed memory in quarantine: the resident set says nothing here";
#endif
  if (!reset_peak_resident()) GTEST_SKIP() << "no /proc/self/clear_refs to reset the peak";
  ModelConfig cfg = ModelConfig::preset("small", 32768);  // hidden 256, 8 FFN experts
  cfg.intermediate_size = 1536;
  cfg.num_hidden_layers = 8;
  const std::string dir = test::scratch_dir("moepp-loadmem");
  {
    auto w = ModelParams<float>::zeros(cfg);
    Rng rng(4);
    w.init(cfg, rng);
    save_model_folder(dir, cfg, w);
  }
  int64_t file_bytes = 0;
  {
    std::ifstream f(dir + "/model.safetensors", std::ios::binary | std::ios::ate);
    file_bytes = int64_t(f.tellg());
  }
  ASSERT_GT(file_bytes, int64_t(300) << 20);
  reset_peak_resident();
  const int64_t before = status_bytes("VmRSS");
  const auto m = load_packed_model_folder(dir, WeightType::q8_0);
  const int64_t peak = status_bytes("VmHWM");
  ASSERT_GT(before, 0);
  ASSERT_GT(peak, 0);
  int64_t kept = int64_t(m->packed_bytes());
  m->rest.for_each(cfg, [&](const std::string&, const Tensor<float>& t) { kept += t.numel() * 4; });
  const double bound = 1.1 * double(kept) + 200e6;
  EXPECT_LE(double(peak - before), bound) << "file " << file_bytes / 1e6 << " MB, packed model " << kept / 1e6
                                         << " MB, peak grew by " << (peak - before) / 1e6 << " MB";
  std::filesystem::remove_all(dir);
}
