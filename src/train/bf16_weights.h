// The weight matrices a bf16 mixed-precision step reads through a Bf16Shadow
// (kernels/mixed_precision.h): every allocated parameter of rank 2 or more (the vectors,
// norms and constant-expert values, never a GEMM operand, are left out). A rank of an
// expert-parallel run has no storage for the experts it does not own; they are skipped.
#pragma once
#include <vector>

#include "kernels/mixed_precision.h"
#include "model/params.h"

namespace moepp {

std::vector<Bf16Shadow::Span> weight_matrix_spans(const ModelConfig& cfg, const ModelParams<float>& params);

}  // namespace moepp
