// moepp eval: validation loss, perplexity and routing statistics as one JSON object.
#include <cmath>
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "data/data_folder.h"
#include "data/shards.h"
#include "model/model_folder.h"
#include "train/evaluator.h"

namespace moepp::cli {

void add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Loss, perplexity and routing statistics of a model on prepared data (JSON)");
  struct Args {
    std::string model, data, split = "val";
    int64_t batch = 8, seq = 128, max_batches = 0;
    int threads = 0, ep_size = 1;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Model folder")->required();
  cmd->add_option("--data", a->data, "Prepared data folder")->required();
  cmd->add_option("--split", a->split, "val or train")->default_val("val")->check(CLI::IsMember({"val", "train"}));
  cmd->add_option("--batch", a->batch, "Sequences per batch")->default_val(8)->check(positive_number());
  cmd->add_option("--seq", a->seq, "Tokens per sequence")->default_val(128)->check(positive_number());
  cmd->add_option("--max-batches", a->max_batches, "Stop after N batches (0: the whole split)")
      ->default_val(0)
      ->check(non_negative_number());
  cmd->add_option("--ep-size", a->ep_size,
                  "Under mpirun -np N: ranks per expert-parallel group (each batch is split over the N ranks)")
      ->default_val(1)
      ->check(CLI::Range(1, 1 << 20));
  add_threads_option(cmd, &a->threads);
  cmd->callback([a] { run_distributed(a->ep_size, [&](Collectives* comm) {
    apply_threads(a->threads);
    const LoadedModel m = load_model_folder(a->model);
    MOEPP_CHECK(a->seq <= m.config.max_position_embeddings, "eval: --seq ", a->seq, " is longer than the context of ",
                a->model, " (max_position_embeddings ", m.config.max_position_embeddings, ")");
    check_data_tokenizer(a->data, a->model + "/tokenizer.model", "eval");
    const auto tokens = read_token_shard(a->data + "/" + a->split + ".bin");
    const EvalResult r = evaluate(m.config, m.params, tokens, a->batch, a->seq, a->max_batches, comm);
    // JSON has no NaN: it would be written as null and read as a missing number.
    MOEPP_CHECK(std::isfinite(r.loss), "eval: ", a->model, ": the loss over ", r.tokens, " tokens of ", a->split,
                ".bin is ", r.loss, " (the model's weights or activations are not finite)");
    if (!comm || comm->rank() == 0) std::printf("%s\n", r.to_json().dump(2).c_str());
  }); });
}

}  // namespace moepp::cli
