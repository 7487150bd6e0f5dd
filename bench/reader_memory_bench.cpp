// bench/reader_memory: the peak resident memory each reader reaches on the worst hostile
// input built here for it, against the target of twice the file's size + 100 MB. Each
// input is read in a child process (fork), whose peak RSS (wait4's ru_maxrss) less the
// child's RSS before reading is the figure; the read must end in a moepp::Error or
// success, never a signal.
// Usage: reader_memory_bench [--dir /tmp/...] [--json FILE]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_util.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/mapped_file.h"
#include "io/torch_pickle.h"
#include "model/config.h"

using namespace moepp;
using namespace moepp::bench;
using json = nlohmann::json;

namespace {

std::string le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
  return s;
}

// The unpickler on a data.pkl as the zip reader hands it over (mapped, read in place).
void unpickle(const std::string& path) {
  const MappedFile f(path);
  parse_state_dict_pickle(f.data(), f.size(), path);
}

struct Case {
  std::string reader, input;
  std::string path;
  std::function<void()> read;
};

long rss_kb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace

int main(int argc, char** argv) {
  const Flags flags(argc, argv);
  const std::string dir = flags.get("dir", "/tmp/moepp-reader-memory-" + std::to_string(::getpid()));
  make_dirs(dir);
  std::vector<Case> cases;

  // Pickle (the data.pkl inside a pytorch_model.bin): every opcode makes a value (BINGET + TUPLE1 on a memoised tuple) until the
  // value limit; then a stack of memo references up to the stack limit.
  {
    std::string p = std::string("\x80\x02)q\x00(", 6);
    for (size_t i = 0; i + 16 < kPickleMaxValues; ++i) p += std::string("h\x00\x85", 3);
    for (size_t i = 0; i + 64 < kPickleMaxStack - kPickleMaxValues; ++i) p += std::string("h\x00", 2);
    p += ".";
    const std::string path = dir + "/values.pkl";
    write_file_atomic(path, p);
    cases.push_back({"data.pkl (unpickler)", "values and stack at their limits", path, [path] { unpickle(path); }});
  }
  // Pickle: the biggest data.pkl accepted, one long string.
  {
    const std::string p = "\x80\x02X" + le(kPickleMaxBytes - 8, 4) + std::string(kPickleMaxBytes - 8, 'a') + ".";
    const std::string path = dir + "/string.pkl";
    write_file_atomic(path, p);
    cases.push_back({"data.pkl (unpickler)", "a 64 MB string", path, [path] { unpickle(path); }});
  }
  // Safetensors: a header at its size limit, tensors at their count limit, metadata at its.
  {
    std::string h = "{";
    for (size_t i = 0; i < kSafetensorsMaxEntries - 1; ++i)
      h += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},";
    h += "\"__metadata__\":{";
    const size_t value_len = (kSafetensorsMaxHeaderBytes - h.size()) / kSafetensorsMaxMetadata - 16;
    for (size_t i = 0; i + 1 < kSafetensorsMaxMetadata; ++i)
      h += "\"m" + std::to_string(i) + "\":\"" + std::string(value_len, 'v') + "\",";
    h += "\"end\":\"\"}}";
    const std::string path = dir + "/header.safetensors";
    write_file_atomic(path, le(h.size(), 8) + h);
    cases.push_back({"safetensors", "4 MB header: 65k tensors + 4k metadata", path, [path] { SafetensorsFile f(path); }});
  }
  // JSON files (config.json, indexes): the largest accepted file of small integers.
  {
    std::string c = "{\"model_type\":\"MoE++\",\"id2label\":[";
    while (c.size() + 8 < kJsonFileMaxBytes) c += "0,";
    c += "0]}";
    const std::string path = dir + "/config.json";
    write_file_atomic(path, c);
    cases.push_back({"config.json / index (JSON)", "an array of small integers at the size limit", path,
                     [path] { ModelConfig::load(path); }});
  }

  json results = json::array();
  std::printf("%-32s %-44s %10s %12s %12s  %s\n", "reader", "input", "file MB", "peak MB", "target MB", "outcome");
  for (const Case& c : cases) {
    const double file_mb = double(std::ifstream(c.path, std::ios::ate | std::ios::binary).tellg()) / 1e6;
    int pipefd[2];
    if (::pipe(pipefd) != 0) return 1;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(pipefd[0]);
      const long before = rss_kb();
      std::string outcome = "read";
      try {
        c.read();
      } catch (const Error& e) {
        outcome = std::string("error: ") + e.what();
      }
      outcome = std::to_string(before) + " " + outcome.substr(0, 160);
      if (::write(pipefd[1], outcome.data(), outcome.size()) < 0) _exit(3);
      _exit(0);
    }
    ::close(pipefd[1]);
    std::string msg;
    char buf[512];
    for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
    ::close(pipefd[0]);
    int status = 0;
    struct rusage ru;
    ::wait4(pid, &status, 0, &ru);
    const long before_kb = std::atol(msg.c_str());
    const std::string outcome = msg.substr(msg.find(' ') + 1);
    const double peak_mb = double(ru.ru_maxrss - before_kb) / 1024.0;
    const double target = 2 * file_mb + 100;
    const bool signalled = WIFSIGNALED(status);
    std::printf("%-32s %-44s %10.1f %12.1f %12.1f  %s\n", c.reader.c_str(), c.input.c_str(), file_mb, peak_mb, target,
                signalled ? "SIGNAL" : outcome.c_str());
    results.push_back({{"reader", c.reader}, {"input", c.input}, {"file_mb", file_mb}, {"peak_mb", peak_mb},
                       {"target_mb", target}, {"signal", signalled}, {"outcome", outcome}});
  }
  remove_tree(dir);
  if (flags.has("json")) std::ofstream(flags.get("json", "")) << results.dump(2) << "\n";
  return 0;
}
