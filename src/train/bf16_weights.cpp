#include "train/bf16_weights.h"

namespace moepp {

std::vector<Bf16Shadow::Span> weight_matrix_spans(const ModelConfig& cfg, const ModelParams<float>& params) {
  std::vector<Bf16Shadow::Span> spans;
  params.for_each(cfg, [&](const std::string&, const Tensor<float>& t) {
    if (t.shape().rank() >= 2 && t.numel() > 0 && t.data()) spans.emplace_back(t.data(), t.numel());
  });
  return spans;
}

}  // namespace moepp
