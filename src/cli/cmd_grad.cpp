// moepp grad: the training loss of one sequence and every parameter's gradient, under the
// SPEC tensor names (loss as "loss", the mean balance loss as "balance_loss").
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "model/model_folder.h"
#include "io/safetensors.h"
#include "model/transformer.h"

namespace moepp::cli {

void add_grad(CLI::App& app) {
  auto* cmd = app.add_subcommand("grad", "Write the loss and every parameter's gradient for one token sequence");
  auto a = std::make_shared<SequenceArgs>();
  add_sequence_options(cmd, *a);
  cmd->callback([a] {
    apply_threads(a->threads);
    const LoadedModel m = load_model_folder(a->model);
    const auto ids = sequence_ids(*a);
    MOEPP_CHECK(ids.size() >= 2, "grad: need at least two tokens (the loss predicts each next token)");
    check_ids_in_vocab(ids, m.config.vocab_size);
    const auto targets = next_token_targets(ids.data(), int64_t(ids.size()));
    ModelCache<float> cache;
    cache.capacity_factor = m.config.capacity_factor;  // a training step's gradient
    model_forward(m.config, m.params, ids.data(), 1, int64_t(ids.size()), cache);
    auto grads = ModelParams<float>::zeros(m.config);
    const LossParts p = model_backward(m.config, m.params, cache, targets.data(), grads);
    const float loss = float(p.loss), lm = float(p.lm_loss), bal = float(p.balance_loss);
    // As with logits: a NaN in the written file would pass for a gradient.
    MOEPP_CHECK(std::isfinite(loss), "grad: the loss is ", loss, " (", a->model,
                ": the weights or activations are not finite); nothing written");
    grads.for_each(m.config, [&](const std::string& name, const Tensor<float>& t) {
      for (int64_t i = 0; i < t.numel(); ++i)
        MOEPP_CHECK(std::isfinite(t[i]), "grad: the gradient of ", name, " is ", t[i], " at element ", i,
                    "; nothing written");
    });
    std::vector<SafetensorsWriteItem> items = {{"loss", DType::f32, {1}, &loss},
                                               {"lm_loss", DType::f32, {1}, &lm},
                                               {"balance_loss", DType::f32, {1}, &bal}};
    grads.for_each(m.config, [&](const std::string& name, const Tensor<float>& t) {
      items.push_back({name, DType::f32, t.shape().dims, t.data()});
    });
    write_safetensors(a->out, items);
    const nlohmann::json summary = {{"tokens", ids.size()}, {"loss", p.loss}, {"lm_loss", p.lm_loss},
                                    {"balance_loss", p.balance_loss}, {"out", a->out}};
    std::printf("%s\n", summary.dump().c_str());
  });
}

}  // namespace moepp::cli
