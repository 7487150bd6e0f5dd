// moepp generate: stream a continuation of a prompt, with a KV cache.
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "cli/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "infer/generator.h"
#include "model/model_folder.h"

namespace moepp::cli {

namespace {

// "ID=BIAS", as --logit-bias takes it.
std::pair<int32_t, float> parse_logit_bias(const std::string& text) {
  const size_t eq = text.find('=');
  size_t id_end = 0, bias_end = 0;
  int64_t id = -1;
  float bias = 0;
  try {
    if (eq != std::string::npos) {
      id = std::stoll(text.substr(0, eq), &id_end);
      bias = std::stof(text.substr(eq + 1), &bias_end);
    }
  } catch (const std::exception&) {
    id = -1;
  }
  MOEPP_CHECK(eq != std::string::npos && id_end == eq && bias_end == text.size() - eq - 1 && id >= 0 &&
                  id <= INT32_MAX,
              "generate: --logit-bias takes ID=BIAS (a token id and a number), got '", text, "'");
  return {int32_t(id), bias};
}

}  // namespace

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt, streaming text to stdout");
  struct Args {
    std::string model, prompt, prompt_file, dtype = "f32", kv_dtype = "auto";
    int n = 128;
    SamplerOptions s;
    int threads = 0;
    int64_t context = 0;
    std::vector<std::string> stop;
    double repeat_penalty = 1.0;
    int repeat_last_n = 64;
    double presence_penalty = 0, frequency_penalty = 0;
    std::vector<std::string> logit_bias;
    bool quiet = false;
    bool mmap = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("-m,--model", a->model, "Model folder (with tokenizer.model)")->required();
  auto* prompt = cmd->add_option("-p,--prompt", a->prompt, "Prompt text");
  auto* prompt_file = cmd->add_option("-f,--file", a->prompt_file, "Read the prompt from a file");
  prompt->excludes(prompt_file);
  cmd->add_option("-c,--context", a->context,
                  "Positions for prompt + continuation (0: the model's max_position_embeddings)")
      ->default_val(0)
      ->check(non_negative_number());
  cmd->add_option("--stop", a->stop, "Stop before this string (repeatable); it is not printed");
  cmd->add_option("--repeat-penalty", a->repeat_penalty,
                  "Divide the logits of recently seen tokens by this (1: off; llama.cpp's 1.1 is a common choice)")
      ->default_val(1.0)
      ->check(positive_number());
  cmd->add_option("--repeat-last-n", a->repeat_last_n, "How many recent tokens the repeat penalty looks at")
      ->default_val(64)
      ->check(non_negative_number());
  cmd->add_option("--presence-penalty", a->presence_penalty,
                  "Lower the logit of every token generated so far by this (OpenAI's presence_penalty; 0: off)")
      ->default_val(0.0)
      ->check(CLI::Range(-2.0, 2.0));
  cmd->add_option("--frequency-penalty", a->frequency_penalty,
                  "Lower the logit of a generated token by this for each time it was generated (OpenAI's "
                  "frequency_penalty; 0: off)")
      ->default_val(0.0)
      ->check(CLI::Range(-2.0, 2.0));
  cmd->add_option("--logit-bias", a->logit_bias,
                  "ID=BIAS: add BIAS to token ID's logit at every step (repeatable; -100 bans the token)");
  cmd->add_flag("-q,--quiet", a->quiet, "No timing line and no notices on stderr");
  cmd->add_option("-n,--max-tokens", a->n, "Tokens to generate")->default_val(128)->check(non_negative_number());
  cmd->add_option("--temperature,--temp", a->s.temperature, "Sampling temperature (0: greedy)")
      ->default_val(0.8)
      ->check(non_negative_number());
  cmd->add_option("--top-k", a->s.top_k, "Sample among the k most likely tokens (0: all)")
      ->default_val(40)
      ->check(non_negative_number());
  cmd->add_option("--top-p", a->s.top_p, "Nucleus sampling mass")->default_val(0.95)->check(unit_fraction());
  cmd->add_option("--min-p", a->s.min_p,
                  "Sample only among tokens at least this likely relative to the most likely one (0: off)")
      ->default_val(0.0)
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("-s,--seed", a->s.seed, "Sampling seed")->default_val(1);
  cmd->add_option("--dtype", a->dtype, "Weights in memory: f32, bf16, q8_0 or q4 (packed on load; docs/quantization.md)")
      ->default_val("f32")
      ->check(CLI::IsMember(weight_type_names()));
  cmd->add_flag("--mmap", a->mmap,
                "--dtype f32: use the f32 weights where they lie in the folder's file (mapped copy-on-write) "
                "instead of copying them: a folder moepp wrote loads in a blink from the page cache, though "
                "decode may read such pages slower (docs/quantization.md). Converted bf16/q8_0/q4 folders are "
                "always used in place");
  add_kv_dtype_option(cmd, &a->kv_dtype);
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    apply_threads(a->threads);
    MOEPP_CHECK(!a->prompt.empty() || !a->prompt_file.empty(), "generate: give a prompt with -p/--prompt or -f/--file");
    const std::string prompt_text = text_or_file(a->prompt, a->prompt_file, "generate");
    const Tokenizer tok = folder_tokenizer(a->model);
    auto show = [](const std::string& piece) {
      std::printf("%s", piece.c_str());
      std::fflush(stdout);
    };
    GenerateStats stats;
    GenerateOptions opt{a->n, a->s};
    opt.context = a->context;
    opt.kv_dtype = parse_kv_dtype(a->kv_dtype, parse_weight_type(a->dtype));
    opt.stop = a->stop;
    opt.repeat_penalty = a->repeat_penalty;
    opt.repeat_last_n = a->repeat_last_n;
    opt.presence_penalty = a->presence_penalty;
    opt.frequency_penalty = a->frequency_penalty;
    for (const std::string& b : a->logit_bias) opt.logit_bias.push_back(parse_logit_bias(b));
    opt.stats = &stats;
    std::vector<RoutingStats> routing;
    opt.routing = &routing;
    int64_t max_positions = 0;
    if (a->dtype == "f32") {
      const LoadedModel m = load_model_folder(a->model, {.in_place = a->mmap});
      max_positions = m.config.max_position_embeddings;
      generate_text(m.config, m.params, tok, prompt_text, opt, show);
    } else {
      const auto packed = load_packed_model_folder(a->model, parse_weight_type(a->dtype));
      max_positions = packed->config.max_position_embeddings;
      generate_text(*packed, tok, prompt_text, opt, show);
    }
    std::printf("\n");
    std::fflush(stdout);
    if (a->quiet) return;
    if (stats.stopped == GenerateStats::Stop::context)
      std::fprintf(stderr, "generate: the context of %lld positions is full after %lld tokens; -c sets it (up to the "
                   "model's %lld)\n", (long long)stats.context, (long long)stats.generated_tokens,
                   (long long)max_positions);
    RoutingStats all;
    for (const auto& r : routing) all.add(r);
    const char* why = stats.stopped == GenerateStats::Stop::eos           ? "end of text"
                      : stats.stopped == GenerateStats::Stop::stop_string ? "stop string"
                      : stats.stopped == GenerateStats::Stop::context     ? "context full"
                                                                            : "token limit";
    std::fprintf(stderr,
                 "generate: prompt %lld tokens at %.1f t/s | generated %lld tokens at %.1f t/s | FFN experts per "
                 "token %.3f (prompt and continuation, all MoE layers) | stopped: %s\n",
                 (long long)stats.prompt_tokens, stats.prompt_seconds > 0 ? stats.prompt_tokens / stats.prompt_seconds : 0.0,
                 (long long)stats.generated_tokens,
                 stats.generate_seconds > 0 ? stats.generated_tokens / stats.generate_seconds : 0.0,
                 all.ffn_experts_per_token(), why);
  });
}

}  // namespace moepp::cli
