// `moepp --version`: the version, the commit it was configured from, the GEMM provider and
// the CPU features the build uses (compiled for) and the machine has (found at run time).
#include <string>
#include <thread>

#include "cli/commands.h"
#include "core/parallel.h"
#include "kernels/gemm.h"

#ifndef MOEPP_VERSION
#define MOEPP_VERSION "unknown"
#endif
#ifndef MOEPP_GIT_COMMIT
#define MOEPP_GIT_COMMIT "unknown"
#endif

namespace moepp::cli {

namespace {
// Names joined by spaces, or `none` when no name was added.
struct FeatureList {
  std::string names;
  void add(bool on, const char* name) {
    if (on) names += (names.empty() ? "" : " ") + std::string(name);
  }
  std::string or_else(const char* none) const { return names.empty() ? none : names; }
};

// The instruction sets the compiler was allowed to use (-march): what the kernels need.
std::string compiled_features() {
  FeatureList f;
#if defined(__AVX2__)
  f.add(true, "avx2");
#endif
#if defined(__FMA__)
  f.add(true, "fma");
#endif
#if defined(__AVX512F__)
  f.add(true, "avx512f");
#endif
#if defined(__AVX512BW__)
  f.add(true, "avx512bw");
#endif
#if defined(__AVX512VL__)
  f.add(true, "avx512vl");
#endif
#if defined(__AVX512BF16__)
  f.add(true, "avx512bf16");
#endif
  return f.or_else("none beyond the baseline");
}

std::string machine_features() {
  __builtin_cpu_init();
  FeatureList f;
  f.add(__builtin_cpu_supports("avx2"), "avx2");
  f.add(__builtin_cpu_supports("fma"), "fma");
  f.add(__builtin_cpu_supports("avx512f"), "avx512f");
  f.add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  f.add(__builtin_cpu_supports("avx512vl"), "avx512vl");
  return f.or_else("none of avx2 fma avx512f avx512bw avx512vl");
}
}  // namespace

std::string version_text() {
  return std::string("moepp ") + MOEPP_VERSION + " (commit " + MOEPP_GIT_COMMIT + ")\n" +
         "GEMM provider: " + gemm_provider() + "\n" +
         "CPU features compiled for: " + compiled_features() + "\n" +
         "CPU features of this machine: " + machine_features() + "\n" +
         "threads: " + std::to_string(max_threads()) + " (OMP_NUM_THREADS or --threads to change)";
}

}  // namespace moepp::cli
