// moepp generate: stream a continuation of a prompt, with a KV cache.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "infer/sampler.h"
#include "infer/session.h"
#include "io/model_folder.h"

namespace moepp::cli {

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Continue a prompt, streaming text to stdout");
  struct Args {
    std::string model, prompt;
    int n = 128;
    SamplerOptions s;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model folder (with tokenizer.model)")->required();
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_option("-n,--max-tokens", a->n, "Tokens to generate")->default_val(128);
  cmd->add_option("--temperature", a->s.temperature, "Sampling temperature (0: greedy)")->default_val(0.8);
  cmd->add_option("--top-k", a->s.top_k, "Sample among the k most likely tokens (0: all)")->default_val(40);
  cmd->add_option("--top-p", a->s.top_p, "Nucleus sampling mass")->default_val(0.95);
  cmd->add_option("--seed", a->s.seed, "Sampling seed")->default_val(1);
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    apply_threads(a->threads);
    const LoadedModel m = load_model_folder(a->model);
    const Tokenizer tok(a->model + "/tokenizer.model");
    std::vector<int32_t> ids;
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    const auto p = tok.encode(a->prompt);
    ids.insert(ids.end(), p.begin(), p.end());
    check_ids_in_vocab(ids, m.config.vocab_size);
    const int64_t ctx = std::min<int64_t>(m.config.max_position_embeddings, int64_t(ids.size()) + a->n);
    MOEPP_CHECK(int64_t(ids.size()) < ctx, "generate: the prompt (", ids.size(), " tokens) fills the context of ",
                m.config.max_position_embeddings);
    Session<float> session(m.config, m.params, ctx);
    Sampler sampler(a->s);
    Tensor<float> logits;
    session.append(ids.data(), int64_t(ids.size()), logits);
    // Decode prompt and continuation together and print what is new: SentencePiece
    // pieces carry their leading space, which a continuation decoded alone would lose.
    std::vector<int32_t> out = p;
    std::string shown = tok.decode(out);
    std::printf("%s", shown.c_str());
    for (int i = 0; i < a->n && session.length() < ctx; ++i) {
      const int64_t V = m.config.vocab_size;
      const int32_t next = sampler.sample(logits.data() + (logits.dim(0) - 1) * V, V);
      if (next == tok.eos_id()) break;
      out.push_back(next);
      // Decode the whole continuation and print what is new: pieces can merge across tokens.
      const std::string text = tok.decode(out);
      if (text.size() > shown.size() && text.compare(0, shown.size(), shown) == 0) {
        std::printf("%s", text.c_str() + shown.size());
        std::fflush(stdout);
        shown = text;
      }
      session.append(&next, 1, logits);
    }
    std::printf("\n");
  });
}

}  // namespace moepp::cli
