// moepp logits: the full logits [T, vocab] of one sequence, as safetensors tensor "logits".
#include "cli/commands.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace moepp::cli {

void add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Write the logits [T, vocab] of a token sequence (f32 tensor \"logits\")");
  struct Args {
    std::string model, ids, out;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model folder")->required();
  cmd->add_option("--ids", a->ids, "Token ids: 1,2,3 or @file")->required();
  cmd->add_option("--out", a->out, "Output .safetensors file")->required();
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] {
    apply_threads(a->threads);
    const LoadedModel m = load_model_folder(a->model);
    const auto ids = parse_ids(a->ids);
    check_ids_in_vocab(ids, m.config.vocab_size);
    ModelCache<float> cache;
    model_forward(m.config, m.params, ids.data(), 1, int64_t(ids.size()), cache);
    write_safetensors(a->out, {{"logits", DType::f32, cache.logits.shape().dims, cache.logits.data()}});
  });
}

}  // namespace moepp::cli
