// The heterogeneous balance loss (SPEC §2.3, the MoE++ paper's Eq. 7):
//   L_b = sum_i eta_i f_i P_i,  f_i = (tokens whose top-k holds i) / T,  P_i = mean_t p_ti,
// eta_i = 1 for FFN experts and tau for zero-computation experts (constant included).
// f carries no gradient; P does, so dL_b/dp_ti = eta_i f_i / T.
#pragma once
#include <cstdint>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

// p: [T, E] router probabilities; idx: [T, k]. Writes f (size E) and returns L_b.
template <typename T>
double balance_loss_forward(const MoeConfig& cfg, const T* p, const int32_t* idx,
                            int64_t tokens, std::vector<double>& f);

// The same in two halves, for a batch spread over ranks: the sums L_b is made of, [2E + 1]
// (per expert the tokens whose top-k holds it, then per expert sum_t p_te, then T), which
// the ranks add up; then L_b and f of the summed batch.
template <typename T>
void balance_loss_sums(const MoeConfig& cfg, const T* p, const int32_t* idx, int64_t tokens,
                       std::vector<double>& sums);
double balance_loss_from_sums(const MoeConfig& cfg, const std::vector<double>& sums, std::vector<double>& f);

// dp [rows, E] += dloss * eta_i f_i / T. tokens: T, the whole batch's count; rows: this
// rank's share of it (all of it in one process).
template <typename T>
void balance_loss_backward(const MoeConfig& cfg, const std::vector<double>& f, int64_t rows, int64_t tokens,
                           double dloss, T* dp);

}  // namespace moepp
