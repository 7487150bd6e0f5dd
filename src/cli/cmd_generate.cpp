// moepp generate: stream a continuation of a prompt, with a KV cache.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "infer/generator.h"
#include "model/model_folder.h"

namespace moepp::cli {

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt, streaming text to stdout");
  struct Args {
    std::string model, prompt, dtype = "f32";
    int n = 128;
    SamplerOptions s;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model folder (with tokenizer.model)")->required();
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_option("-n,--max-tokens", a->n, "Tokens to generate")->default_val(128)->check(non_negative_number());
  cmd->add_option("--temperature", a->s.temperature, "Sampling temperature (0: greedy)")
      ->default_val(0.8)
      ->check(non_negative_number());
  cmd->add_option("--top-k", a->s.top_k, "Sample among the k most likely tokens (0: all)")
      ->default_val(40)
      ->check(non_negative_number());
  cmd->add_option("--top-p", a->s.top_p, "Nucleus sampling mass")->default_val(0.95)->check(unit_fraction());
  cmd->add_option("--seed", a->s.seed, "Sampling seed")->default_val(1);
  cmd->add_option("--dtype", a->dtype, "Weights in memory: f32, bf16 or q8_0 (packed on load; docs/quantization.md)")
      ->default_val("f32")
      ->check(CLI::IsMember(weight_type_names()));
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    apply_threads(a->threads);
    const Tokenizer tok = folder_tokenizer(a->model);
    auto show = [](const std::string& piece) {
      std::printf("%s", piece.c_str());
      std::fflush(stdout);
    };
    if (a->dtype == "f32") {
      const LoadedModel m = load_model_folder(a->model);
      generate_text(m.config, m.params, tok, a->prompt, GenerateOptions{a->n, a->s}, show);
    } else {
      const auto packed = load_packed_model_folder(a->model, parse_weight_type(a->dtype));
      generate_text(*packed, tok, a->prompt, GenerateOptions{a->n, a->s}, show);
    }
    std::printf("\n");
  });
}

}  // namespace moepp::cli
