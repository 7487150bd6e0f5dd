// The subcommands of `moepp`: each file adds one to the CLI11 app and runs it. Shared
// helpers (token-id lists, thread setup) live in common.cpp.
#pragma once
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/collectives.h"
#include "data/tokenizer.h"

namespace moepp::cli {

void add_prepare(CLI::App& app);
void add_train(CLI::App& app);
void add_eval(CLI::App& app);
void add_generate(CLI::App& app);
void add_logits(CLI::App& app);
void add_grad(CLI::App& app);
void add_info(CLI::App& app);
void add_compare(CLI::App& app);
void add_convert(CLI::App& app);
void add_experiment(CLI::App& app);
void add_analyze(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_plot(CLI::App& app);
void add_serve(CLI::App& app);

// `moepp --version`: version, commit, GEMM provider, CPU features.
std::string version_text();

// The tokenizer of a model (or data) folder, DIR/tokenizer.model, or a tokenizer.model file
// given directly. A path that does not exist, a folder that is not a model folder, and a
// model folder without a tokenizer are three errors, each saying which.
Tokenizer folder_tokenizer(const std::string& path);

// A folder name for new output that touches nothing existing: `base` if nothing is there,
// else base-2, base-3, ... (the folder is not created).
std::string fresh_folder_name(const std::string& base);
// The last name of a folder path ("runs/a/" names "a"); `fallback` for ".", ".." or "/".
std::string folder_name(const std::string& path, const std::string& fallback);

// "1,2,3" or "@file" (ids separated by whitespace or commas).
std::vector<int32_t> parse_ids(const std::string& spec);
void check_ids_in_vocab(const std::vector<int32_t>& ids, int64_t vocab);
// The inputs of `logits` and `grad`: a model folder, a token sequence, an output file.
struct SequenceArgs {
  std::string model, ids, text, file, out;
  int threads = 0;
};
void add_sequence_options(CLI::App* cmd, SequenceArgs& a);
// The text of a --text option, or else the whole content of the --file option's file (read
// with io's read_regular_file, at most kMaxTextFileBytes); `command` names the caller in errors.
constexpr size_t kMaxTextFileBytes = size_t(1) << 30;
std::string text_or_file(const std::string& text, const std::string& file, const char* command);
// The sequence the options name: --ids as given, or --text / --file through the model
// folder's tokenizer with BOS first (as `moepp tokenize` prints them).
std::vector<int32_t> sequence_ids(const SequenceArgs& a);

// --threads N (0 = all cores; at most kMaxThreads or the machine's hardware threads,
// whichever is more: far more OpenMP threads than that exhaust memory and crash).
constexpr int kMaxThreads = 1024;
void add_threads_option(CLI::App* cmd, int* threads);
// --kv-dtype f32|bf16: the KV caches' element type (generate, serve; model/kv_cache.h).
void add_kv_dtype_option(CLI::App* cmd, std::string* kv_dtype);
// Sets the thread count (0: OpenMP's default). Under mpirun, ranks sharing a machine split
// its cores unless --threads or OMP_NUM_THREADS says otherwise: N ranks each spinning on
// every core run far slower than one.
void apply_threads(int threads);

// Runs fn with the job's Collectives when started by mpirun (src/dist; null otherwise).
// An error on one rank ends every rank of the job, naming the rank (the others would wait
// for it forever).
void run_distributed(int ep_size, const std::function<void(Collectives*)>& fn);

// Checks for numeric options. CLI11 reports a failure as "--flag: MESSAGE", and main()
// prints it as "error: COMMAND: --flag: must be ..., got 'VALUE'". CLI11's own
// PositiveNumber and Range let NaN through and print the whole range of a double.
CLI::Validator positive_number();      // finite and > 0 (sizes, counts that cannot be 0)
CLI::Validator non_negative_number();  // finite and >= 0 (counts where 0 means "none" or "all")
CLI::Validator unit_fraction();        // finite, in (0, 1]

// While one lives, SIGINT and SIGTERM set flag() instead of ending the process (the
// library's training stop request: TrainOptions::stop); the previous handlers come back
// when it dies. `moepp train` then writes a checkpoint and exits normally.
class StopOnSignals {
 public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  const std::atomic<bool>* flag() const;

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

}  // namespace moepp::cli
