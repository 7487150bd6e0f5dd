#include "bench_util.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <sstream>

#include "core/affinity.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/vec_math.h"
#include "core/stats.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>

namespace moepp::bench {

void fill_uniform(float* v, int64_t n, float half_width, uint64_t& state) {
  for (int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = float(int32_t(state >> 32)) * (1.0f / 2147483648.0f) * half_width;  // [-1, 1) scaled
  }
}

double fma_peak_gflops(int threads) {
#if defined(__AVX512F__)
  constexpr int kChains = 12;  // FMA latency 4 x 2 ports, with room to spare
  constexpr long kIters = 20'000'000;
  double best = 0;
  for (int trial = 0; trial < 10; ++trial) {
    float sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      __m512 acc[kChains];
      const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
      for (long it = 0; it < kIters / kChains; ++it)
#pragma GCC unroll 12
        for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
      for (int i = 0; i < kChains; ++i) sink += reduce_add(acc[i]);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sink == 12345.0f) std::printf(" ");  // keeps the loop alive
    best = std::max(best, double(kIters / kChains * kChains) * 32.0 * threads / s / 1e9);
  }
  return best;
#else
  (void)threads;
  return 0;
#endif
}

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median_seconds(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < std::max(1, repeats); ++i) t.push_back(seconds_of(fn));
  return median(t);
}

Flags::Flags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    MOEPP_CHECK(arg.rfind("--", 0) == 0, "unexpected argument '", arg, "' (flags are --key value)");
    const std::string a = arg.substr(2);
    if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      values_[a] = argv[++i];
    } else {
      values_[a].assign(1, '1');  // a bare flag; (= "1" trips GCC 12's false -Wrestrict)
    }
  }
}

std::string Flags::get(const std::string& key, const std::string& fallback) const {
  const auto it = values_.find(key);
  return it == values_.end() ? fallback : it->second;
}

long long Flags::get_int(const std::string& key, long long fallback) const {
  const auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (...) {
    fail("--", key, ": '", it->second, "' is not an integer");
  }
}

std::vector<double> Flags::get_list(const std::string& key, const std::vector<double>& fallback) const {
  const auto it = values_.find(key);
  if (it == values_.end()) return fallback;
  std::vector<double> out;
  std::stringstream ss(it->second);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      out.push_back(std::stod(item));
    } catch (...) {
      fail("--", key, ": '", item, "' is not a number");
    }
  }
  return out;
}

bool setup_threads(const Flags& flags, int threads) {
  set_threads(threads);
  const bool pinned = flags.get_int("pin", 1) != 0 && pin_threads_to_cpus();
  std::fprintf(stderr, "threads: %d, %s\n", threads,
               pinned ? "one per CPU, pinned (--pin 0: leave them to the scheduler)" : "not pinned");
  return pinned;
}

double resident_gb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = field;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) * 1024 / 1e9;  // kB (KiB) -> GB
  return 0;
}

std::string run_capture(const std::string& command) {
  // The peer starts with every CPU the process had (a child inherits the CPU set of the
  // thread that starts it) and in its default placement: OMP_PROC_BIND=true took PyTorch's
  // vanilla layer forward from 1562 to 1060 tokens/s (its matmuls run on OpenBLAS's own,
  // unbound threads), so the peer runs as its users run it.
  const ScopedUnpin unpin;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  return rc == 0 ? out : "";
}

}  // namespace moepp::bench
