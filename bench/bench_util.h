// Benchmark helpers: wall-clock timing with a warm-up and the median of repeats, simple
// flag parsing, and running a peer script (PyTorch) whose stdout is one JSON object.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace moepp::bench {

// Wall-clock seconds of one call of fn.
double seconds_of(const std::function<void()>& fn);

// Runs fn once to warm up, then `repeats` times; returns the median seconds.
double median_seconds(int repeats, const std::function<void()>& fn);

// --key value and --flag pairs; positional arguments are an error.
class Flags {
 public:
  Flags(int argc, char** argv);
  std::string get(const std::string& key, const std::string& fallback) const;
  long long get_int(const std::string& key, long long fallback) const;
  std::vector<double> get_list(const std::string& key, const std::vector<double>& fallback) const;
  bool has(const std::string& key) const { return values_.count(key) != 0; }

 private:
  std::map<std::string, std::string> values_;
};

// Uniform values in [-half_width, half_width) from a 64-bit LCG (state advances by n): cheap
// enough for the billions of values a 7B-shaped bench needs, where Rng::normal is not.
void fill_uniform(float* v, int64_t n, float half_width, uint64_t& state);

// The machine's f32 arithmetic ceiling on `threads` threads: GFLOP/s of independent
// 16-lane FMAs with no memory traffic, the best of ten short trials (a peak is the
// most the cores ever gave; vCPUs shared with neighbours give less at times). 0 when
// built without AVX-512.
double fma_peak_gflops(int threads);

// Sets the thread count and, unless --pin 0, pins one thread per CPU where the team uses
// every CPU (core/affinity.h); says which on stderr. Returns whether it pinned.
bool setup_threads(const Flags& flags, int threads);

// This process's resident set in GB from /proc/self/status: "VmRSS:" now, "VmHWM:" its peak.
double resident_gb(const char* field = "VmRSS:");

// Runs a shell command and returns its stdout; empty string when it fails. The command
// runs on every CPU the process started with, unpinned.
std::string run_capture(const std::string& command);

}  // namespace moepp::bench
