// Helpers shared by the subcommands (commands.h): token-id lists, threads, numeric checks,
// and the SIGINT/SIGTERM guard that turns Ctrl-C into the library's training stop request.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "core/error.h"
#include "core/parallel.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "dist/mpi_collectives.h"

namespace moepp::cli {

namespace {
std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the stop flag is set from a signal handler");
extern "C" void on_stop_signal(int) { g_stop_requested = true; }
}  // namespace

StopOnSignals::StopOnSignals() {
  g_stop_requested = false;
  old_int_ = std::signal(SIGINT, on_stop_signal);
  old_term_ = std::signal(SIGTERM, on_stop_signal);
}

StopOnSignals::~StopOnSignals() {
  std::signal(SIGINT, old_int_);
  std::signal(SIGTERM, old_term_);
}

const std::atomic<bool>* StopOnSignals::flag() const { return &g_stop_requested; }

std::vector<int32_t> parse_ids(const std::string& spec) {
  std::string text = spec;
  std::string source = "--ids";
  if (!spec.empty() && spec[0] == '@') {
    source = spec.substr(1);
    std::ifstream in(source);
    MOEPP_CHECK(in, source, ": cannot open the ids file");
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  for (char& c : text)
    if (c == ',') c = ' ';
  std::istringstream is(text);
  std::vector<int32_t> ids;
  std::string tok;
  while (is >> tok) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(tok, &used);
    } catch (...) {
      used = 0;
    }
    MOEPP_CHECK(used == tok.size() && v >= 0 && v <= INT32_MAX, source, ": '", tok, "' is not a token id");
    ids.push_back(int32_t(v));
  }
  MOEPP_CHECK(!ids.empty(), source, ": no token ids");
  return ids;
}

void check_ids_in_vocab(const std::vector<int32_t>& ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i)
    MOEPP_CHECK(ids[i] < vocab, "token id ", ids[i], " at position ", i, " is outside the vocabulary of ", vocab);
}

void add_sequence_options(CLI::App* cmd, SequenceArgs& a) {
  cmd->add_option("--model", a.model, "Model folder")->required();
  auto* ids = cmd->add_option("--ids", a.ids, "Token ids: 1,2,3 or @file (see moepp tokenize)");
  auto* text = cmd->add_option("-p,--text", a.text, "Text, tokenized with the model's tokenizer (BOS first)");
  auto* file = cmd->add_option("-f,--file", a.file, "A file whose content is tokenized like --text");
  ids->excludes(text)->excludes(file);
  text->excludes(file);
  cmd->add_option("--out", a.out, "Output .safetensors file")->required();
  add_threads_option(cmd, &a.threads);
}

namespace {

// A CLI11 validator: the option's text must read as a finite number that `ok` accepts;
// the error says what was wanted and what was given.
CLI::Validator number_check(const std::string& desc, const std::string& want, std::function<bool(double)> ok) {
  return CLI::Validator(
      [want, ok](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || !ok(v))
          return "must be " + want + ", got '" + text + "'";
        return {};
      },
      desc);
}

int max_threads_allowed() { return std::max<int>(kMaxThreads, int(std::thread::hardware_concurrency())); }

}  // namespace

CLI::Validator positive_number() {
  return number_check("POSITIVE", "a positive number", [](double v) { return v > 0; });
}

CLI::Validator non_negative_number() {
  return number_check("NONNEGATIVE", "0 or more", [](double v) { return v >= 0; });
}

CLI::Validator unit_fraction() {
  return number_check("(0,1]", "in (0, 1]", [](double v) { return v > 0 && v <= 1; });
}

void add_threads_option(CLI::App* cmd, int* threads) {
  const int most = max_threads_allowed();
  cmd->add_option("--threads", *threads, "Threads to use (0 = all cores)")
      ->default_val(0)
      ->check(number_check("0.." + std::to_string(most), "from 0 (all cores) to " + std::to_string(most),
                           [most](double v) { return v >= 0 && v <= most; }));
}

void add_kv_dtype_option(CLI::App* cmd, std::string* kv_dtype) {
  cmd->add_option("--kv-dtype", *kv_dtype,
                  "KV cache: f32, or bf16 (half the memory and the bytes a long context's attention reads; keys and "
                  "values rounded to bf16, attention in f32); auto: f32 with --dtype f32, else bf16")
      ->default_val("auto")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}));
}

void apply_threads(int threads) {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (threads == 0 && local && !std::getenv("OMP_NUM_THREADS")) {
    const int ranks_here = std::max(1, std::atoi(local));
    threads = std::max(1, int(std::thread::hardware_concurrency()) / ranks_here);
  }
  if (threads > 0) set_threads(threads);
}

void run_distributed(int ep_size, const std::function<void(Collectives*)>& fn) {
  const auto comm = start_distributed(ep_size);
  try {
    fn(comm.get());
  } catch (const std::exception& e) {
    if (comm) abort_distributed(*comm, e.what());
    throw;
  }
}

std::string text_or_file(const std::string& text, const std::string& file, const char* command) {
  if (file.empty()) return text;
  try {
    return read_regular_file(file, kMaxTextFileBytes);
  } catch (const Error& e) {
    fail(command, ": ", e.what());
  }
}

std::vector<int32_t> sequence_ids(const SequenceArgs& a) {
  if (!a.ids.empty()) return parse_ids(a.ids);
  MOEPP_CHECK(!a.text.empty() || !a.file.empty(), "give the sequence as --ids, --text or --file");
  return folder_tokenizer(a.model).encode_prompt(text_or_file(a.text, a.file, "sequence"));
}

Tokenizer folder_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  MOEPP_CHECK(fs::exists(path, ec), path, ": no such folder or file (expected a model folder or a tokenizer.model)");
  if (!fs::is_directory(path, ec)) return Tokenizer(path);
  if (fs::exists(path + "/tokenizer.model", ec)) return Tokenizer(path + "/tokenizer.model");  // a data folder too
  MOEPP_CHECK(fs::exists(path + "/config.json", ec), path, ": not a model folder (no config.json, no tokenizer.model)");
  MOEPP_CHECK(fs::exists(path + "/tokenizer.model", ec), path,
              ": the model folder has no tokenizer.model (folders from `moepp train` and `moepp convert` carry "
              "the one their data was prepared with; copy it from the data folder)");
  return Tokenizer(path + "/tokenizer.model");
}

std::string fresh_folder_name(const std::string& base) {
  if (!file_exists(base)) return base;
  for (int i = 2;; ++i) {
    const std::string name = base + "-" + std::to_string(i);
    if (!file_exists(name)) return name;
  }
}

std::string folder_name(const std::string& path, const std::string& fallback) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() || name == "." || name == ".." ? fallback : name;
}

}  // namespace moepp::cli
