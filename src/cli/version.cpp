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
std::string compiled_features() {
  std::string f;
  auto add = [&](bool on, const char* name) {
    if (on) f += (f.empty() ? "" : " ") + std::string(name);
  };
#if defined(__AVX2__)
  add(true, "avx2");
#endif
#if defined(__FMA__)
  add(true, "fma");
#endif
#if defined(__AVX512F__)
  add(true, "avx512f");
#endif
#if defined(__AVX512BW__)
  add(true, "avx512bw");
#endif
#if defined(__AVX512VL__)
  add(true, "avx512vl");
#endif
#if defined(__AVX512BF16__)
  add(true, "avx512bf16");
#endif
  return f.empty() ? "none beyond the baseline" : f;
}

std::string machine_features() {
  std::string f;
  auto add = [&](bool on, const char* name) {
    if (on) f += (f.empty() ? "" : " ") + std::string(name);
  };
  __builtin_cpu_init();
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512vl"), "avx512vl");
  return f.empty() ? "none of avx2 fma avx512f avx512bw avx512vl" : f;
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
