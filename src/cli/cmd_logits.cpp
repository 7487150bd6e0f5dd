// moepp logits: the full logits [T, vocab] of one sequence, as safetensors tensor "logits".
#include <cmath>

#include "cli/commands.h"
#include "core/error.h"
#include "infer/session.h"
#include "model/model_folder.h"
#include "io/safetensors.h"
#include "kernels/quant.h"
#include "model/kv_cache.h"
#include "model/transformer.h"

namespace moepp::cli {

namespace {

// A NaN or Inf written into the file would be read as a result; refuse before writing.
void check_finite_logits(const Tensor<float>& logits, const std::string& model) {
  const int64_t V = logits.dim(1);
  for (int64_t i = 0; i < logits.numel(); ++i)
    MOEPP_CHECK(std::isfinite(logits[i]), "logits: non-finite logits at position ", i / V, ": the logit of token ",
                i % V, " is ", logits[i], " (", model, ": the weights or activations are not finite); nothing written");
}

}  // namespace

void add_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "Write the logits [T, vocab] of a token sequence (f32 tensor \"logits\")");
  auto a = std::make_shared<SequenceArgs>();
  add_sequence_options(cmd, *a);
  auto dtype = std::make_shared<std::string>("f32");
  cmd->add_option("--dtype", *dtype, "Weights in memory: f32 (the training forward), bf16, q8_0 or q4 (packed on load)")
      ->default_val("f32")
      ->check(CLI::IsMember(weight_type_names()));
  auto kv_dtype = std::make_shared<std::string>("auto");
  add_kv_dtype_option(cmd, kv_dtype.get());
  cmd->callback([a, dtype, kv_dtype] {
    apply_threads(a->threads);
    const auto ids = sequence_ids(*a);
    const WeightType type = parse_weight_type(*dtype);
    const KvDtype kv = parse_kv_dtype(*kv_dtype, type);
    // The prompt's logits as `generate` and `serve` compute them (their echo + logprobs):
    // a Session's prefill into a KV cache of the same type.
    auto write = [&](Session<float> session) {
      Tensor<float> logits;
      session.append(ids.data(), int64_t(ids.size()), logits);
      check_finite_logits(logits, a->model);
      write_safetensors(a->out, {{"logits", DType::f32, logits.shape().dims, logits.data()}});
    };
    if (type != WeightType::f32) {
      const auto packed = load_packed_model_folder(a->model, type);
      check_ids_in_vocab(ids, packed->config.vocab_size);
      return write(Session<float>(*packed, int64_t(ids.size()), kv));
    }
    const LoadedModel m = load_model_folder(a->model);
    check_ids_in_vocab(ids, m.config.vocab_size);
    if (kv != KvDtype::f32) return write(Session<float>(m.config, m.params, int64_t(ids.size()), kv));
    // f32 weights and cache: the training forward, which the reference fixtures check.
    ModelCache<float> cache;
    model_forward(m.config, m.params, ids.data(), 1, int64_t(ids.size()), cache);
    check_finite_logits(cache.logits, a->model);
    write_safetensors(a->out, {{"logits", DType::f32, cache.logits.shape().dims, cache.logits.data()}});
  });
}

}  // namespace moepp::cli
