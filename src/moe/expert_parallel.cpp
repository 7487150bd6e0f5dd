#include "moe/expert_parallel.h"

#include <cstring>

#include "core/error.h"
#include "core/parallel.h"

namespace moepp {

ExpertShard ExpertShard::of(const MoeConfig& cfg, int ep_size, int q) {
  const int per_rank = cfg.num_ffn / ep_size;
  return ExpertShard{q * per_rank, per_rank};
}

void check_expert_parallel(const MoeConfig& cfg, int ep_size) {
  MOEPP_CHECK(ep_size >= 1 && cfg.num_ffn % ep_size == 0, "expert parallel: --ep-size ", ep_size,
              " must divide the number of FFN experts, ", cfg.num_ffn);
}

template <typename T>
void release_foreign_experts(const MoeConfig& cfg, MoeParams<T>& p, int ep_size, int q) {
  check_expert_parallel(cfg, ep_size);
  const ExpertShard mine = ExpertShard::of(cfg, ep_size, q);
  for (int e = 0; e < cfg.num_ffn; ++e)
    if (!mine.owns(e))
      for (Tensor<T>* t : {&p.up[size_t(e)], &p.down[size_t(e)]}) t->declare(t->shape());
}

namespace {

// Copies rows src[from[r]] to dst[r] (gather) or src[r] to dst[from[r]] (scatter).
template <typename T>
void permute_rows(const T* src, T* dst, const std::vector<int64_t>& from, int64_t D, bool gather) {
  parallel_for(int64_t(from.size()), [&](int64_t r) {
    const int64_t a = gather ? from[size_t(r)] : r, b = gather ? r : from[size_t(r)];
    std::memcpy(dst + b * D, src + a * D, size_t(D) * sizeof(T));
  }, 64);
}

// The counts exchange and the owner's plan: which received row is which expert's.
template <typename T>
void plan_owner_rows(const MoeConfig& cfg, const DispatchPlan& plan, Collectives& comm, ExpertParallelCache<T>& ep) {
  const int E = comm.ep_size(), me = comm.ep_rank();
  const ExpertShard mine = ExpertShard::of(cfg, E, me);
  const int L = mine.count;
  std::vector<int64_t> per_expert(size_t(cfg.num_ffn));
  for (int e = 0; e < cfg.num_ffn; ++e) per_expert[size_t(e)] = plan.rows(e);
  ep.recv_counts.assign(size_t(E * L), 0);
  comm.group_exchange_counts(per_expert.data(), ep.recv_counts.data(), L);
  ep.send_rows.assign(size_t(E), 0);
  ep.recv_rows.assign(size_t(E), 0);
  ep.remote_rows = 0;
  for (int q = 0; q < E; ++q)
    for (int l = 0; l < L; ++l) {
      ep.send_rows[size_t(q)] += per_expert[size_t(q * L + l)];
      ep.recv_rows[size_t(q)] += ep.recv_counts[size_t(q * L + l)];
    }
  for (int q = 0; q < E; ++q)
    if (q != me) ep.remote_rows += ep.send_rows[size_t(q)];
  // Received rows come by source, then expert; the owner's GEMMs want them by expert.
  std::vector<int64_t> source_start(size_t(E) + 1, 0);
  for (int s = 0; s < E; ++s) source_start[size_t(s) + 1] = source_start[size_t(s)] + ep.recv_rows[size_t(s)];
  DispatchPlan& op = ep.plan;
  op.num_ffn = cfg.num_ffn;
  op.top_k = cfg.top_k;
  op.offsets.assign(size_t(cfg.num_ffn) + 1, 0);
  ep.owner_row_of.clear();
  ep.owner_row_of.reserve(size_t(source_start[size_t(E)]));
  for (int e = 0; e < cfg.num_ffn; ++e) {
    if (mine.owns(e)) {
      const int l = e - mine.first;
      for (int s = 0; s < E; ++s) {
        int64_t at = source_start[size_t(s)];
        for (int m = 0; m < l; ++m) at += ep.recv_counts[size_t(s * L + m)];
        for (int64_t i = 0; i < ep.recv_counts[size_t(s * L + l)]; ++i) ep.owner_row_of.push_back(at + i);
      }
    }
    op.offsets[size_t(e) + 1] = int64_t(ep.owner_row_of.size());
  }
}

}  // namespace

template <typename T>
void ffn_experts_forward_parallel(const MoeConfig& cfg, const MoeWeights<T>& w, const DispatchPlan& plan,
                                  FfnCache<T>& local, Collectives& comm, ExpertParallelCache<T>& ep) {
  check_expert_parallel(cfg, comm.ep_size());
  const int64_t D = cfg.hidden, R = plan.ffn_rows();
  plan_owner_rows(cfg, plan, comm, ep);
  const int64_t owned = int64_t(ep.owner_row_of.size());
  ep.staging.fit({owned, D});
  comm.group_exchange_rows(local.x.data(), ep.send_rows.data(), ep.staging.data(), ep.recv_rows.data(),
                           D * int64_t(sizeof(T)));
  ep.ffn.x.fit({owned, D});
  permute_rows(ep.staging.data(), ep.ffn.x.data(), ep.owner_row_of, D, true);
  ffn_experts_forward(cfg, w, ep.plan, ep.ffn);
  permute_rows(ep.ffn.o.data(), ep.staging.data(), ep.owner_row_of, D, false);
  local.o.fit({R, D});
  local.gemm_rows = ep.ffn.gemm_rows;
  comm.group_exchange_rows(ep.staging.data(), ep.recv_rows.data(), local.o.data(), ep.send_rows.data(),
                           D * int64_t(sizeof(T)));
}

template <typename T>
void ffn_experts_backward_parallel(const MoeConfig& cfg, const MoeParams<T>& w, const DispatchPlan&,
                                   const T* d_o, T* dx, MoeParams<T>& grad, GradMode mode, Collectives& comm,
                                   ExpertParallelCache<T>& ep, Tensor<T>& owner_d_o, Tensor<T>& d_h,
                                   Tensor<T>& d_u, Tensor<T>& owner_d_xg) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, owned = int64_t(ep.owner_row_of.size());
  ep.staging.fit({owned, D});
  comm.group_exchange_rows(d_o, ep.send_rows.data(), ep.staging.data(), ep.recv_rows.data(), D * int64_t(sizeof(T)));
  owner_d_o.fit({owned, D});
  permute_rows(ep.staging.data(), owner_d_o.data(), ep.owner_row_of, D, true);
  d_h.fit({owned, I});
  d_u.fit({owned, 2 * I});
  owner_d_xg.fit({owned, D});
  ffn_experts_backward(cfg, w, ep.plan, ep.ffn, owner_d_o.data(), d_h.data(), d_u.data(), owner_d_xg.data(), grad,
                       mode);
  permute_rows(owner_d_xg.data(), ep.staging.data(), ep.owner_row_of, D, false);
  comm.group_exchange_rows(ep.staging.data(), ep.recv_rows.data(), dx, ep.send_rows.data(), D * int64_t(sizeof(T)));
}

template void release_foreign_experts<float>(const MoeConfig&, MoeParams<float>&, int, int);
template void release_foreign_experts<double>(const MoeConfig&, MoeParams<double>&, int, int);
template struct ExpertParallelCache<float>;
template struct ExpertParallelCache<double>;
template void ffn_experts_forward_parallel<float>(const MoeConfig&, const MoeWeights<float>&, const DispatchPlan&, FfnCache<float>&, Collectives&, ExpertParallelCache<float>&);
template void ffn_experts_forward_parallel<double>(const MoeConfig&, const MoeWeights<double>&, const DispatchPlan&, FfnCache<double>&, Collectives&, ExpertParallelCache<double>&);
template void ffn_experts_backward_parallel<float>(const MoeConfig&, const MoeParams<float>&, const DispatchPlan&, const float*, float*, MoeParams<float>&, GradMode, Collectives&, ExpertParallelCache<float>&, Tensor<float>&, Tensor<float>&, Tensor<float>&, Tensor<float>&);
template void ffn_experts_backward_parallel<double>(const MoeConfig&, const MoeParams<double>&, const DispatchPlan&, const double*, double*, MoeParams<double>&, GradMode, Collectives&, ExpertParallelCache<double>&, Tensor<double>&, Tensor<double>&, Tensor<double>&, Tensor<double>&);

}  // namespace moepp
