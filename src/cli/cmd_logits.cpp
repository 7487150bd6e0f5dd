// moepp logits: the full logits [T, vocab] of one sequence, as safetensors tensor "logits".
#include "cli/commands.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace moepp::cli {

void add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Write the logits [T, vocab] of a token sequence (f32 tensor \"logits\")");
  auto a = std::make_shared<SequenceArgs>();
  add_sequence_options(cmd, *a);
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
