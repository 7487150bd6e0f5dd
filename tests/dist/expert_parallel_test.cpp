// The MoE layer spread over ranks (run under mpirun; tests/CMakeLists.txt starts it with 2
// and 4 ranks and several expert-parallel group sizes). Every rank builds the same layer and
// the same whole batch; the reference is the one-process layer over that batch, computed on
// each rank. The distributed layer takes this rank's share of the tokens and must give the
// reference's rows of y and dx, the whole batch's balance loss, and, summed over ranks, the
// reference's parameter gradients. The all-to-all must carry exactly the FFN slots routed to
// experts on other ranks, out and back: zero-computation slots never cross. With a capacity
// factor the ranks' tokens are one batch in rank order: the capacities count over all of
// them, and a slot dropped in the one-process layer is dropped on its rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dist/mpi_collectives.h"
#include "moe/expert_parallel.h"
#include "moe/moe_layer.h"
#include "moe/moe_stack.h"

using namespace moepp;
using namespace moepp::test;

namespace {

Collectives* g_comm = nullptr;

template <typename T>
void check_layer(bool two_layer, double tol, double capacity = 0.0) {
  Collectives& comm = *g_comm;
  const MoeConfig cfg = wide_moe_config(two_layer);
  const int64_t n = 24, D = cfg.hidden, E = cfg.num_experts(), all = n * comm.size();
  const double dbalance = 0.3;
  // The same parameters, batch and output gradient on every rank: one layer's worth of the
  // stack's random setup.
  MoeStack<T> s(cfg, 1, all);
  s.randomize(42);
  const MoeParams<T>& w = s.params[0];
  const Tensor<T>& x = s.x;
  const Tensor<T>& z_prev = s.z_in;
  const Tensor<T>& dy = s.dy;
  Rng rng(43);

  // The reference: one process, the whole batch.
  MoeCache<T> ref;
  ref.capacity_factor = capacity;
  Tensor<T> y_ref({all, D}), dx_ref({all, D}), dz_ref({all, E});
  moe_forward(cfg, w, x.data(), all, z_prev.data(), ref, y_ref.data());
  auto g_ref = MoeParams<T>::zeros(cfg);
  MoeBackwardScratch<T> scratch;
  moe_backward(cfg, w, x.data(), z_prev.data(), ref, dy.data(), static_cast<const T*>(nullptr), dbalance, dx_ref.data(),
               dz_ref.data(), g_ref, scratch, GradMode::overwrite);

  // This rank's share, holding only the experts it owns: the others' weights and gradients
  // have no storage, so a read of them would fault.
  auto w_mine = MoeParams<T>::zeros(cfg);
  const auto from = tensors_of(cfg, s.params[0]), to = tensors_of(cfg, w_mine);
  for (size_t i = 0; i < from.size(); ++i) std::copy(from[i]->data(), from[i]->data() + from[i]->numel(), to[i]->data());
  if (comm.ep_size() > 1) release_foreign_experts(cfg, w_mine, comm.ep_size(), comm.ep_rank());
  const int64_t first = int64_t(comm.rank()) * n;
  MoeCache<T> c;
  c.comm = &comm;
  c.capacity_factor = capacity;
  Tensor<T> y({n, D}), dx({n, D}), dz({n, E});
  const int64_t rows_before = comm.traffic.exchange_rows;
  moe_forward(cfg, w_mine, x.data() + first * D, n, z_prev.data() + first * E, c, y.data());
  const int64_t rows_forward = comm.traffic.exchange_rows - rows_before;
  auto g = MoeParams<T>::zeros(cfg);
  for (Tensor<T>* t : tensors_of(cfg, g)) fill_normal(t->data(), t->numel(), rng, 100.0);  // stale: overwritten
  if (comm.ep_size() > 1) release_foreign_experts(cfg, g, comm.ep_size(), comm.ep_rank());
  moe_backward(cfg, w_mine, x.data() + first * D, z_prev.data() + first * E, c, dy.data() + first * D,
               static_cast<const T*>(nullptr), dbalance, dx.data(), dz.data(), g, scratch, GradMode::overwrite);
  const int64_t rows_backward = comm.traffic.exchange_rows - rows_before - rows_forward;

  EXPECT_LT(rel_error(y.data(), y_ref.data() + first * D, n * D), tol) << "y";
  EXPECT_LT(rel_error(dx.data(), dx_ref.data() + first * D, n * D), tol) << "dx";
  EXPECT_LT(rel_error(dz.data(), dz_ref.data() + first * E, n * E), tol) << "dz_prev";
  EXPECT_NEAR(c.balance_loss, ref.balance_loss, 1e-12 * std::abs(ref.balance_loss)) << "balance loss";
  EXPECT_EQ(c.balance_tokens, all);

  // Gradients: each rank holds its tokens' share (and nothing for experts it does not own);
  // their sum is the whole batch's.
  auto mine = tensors_of(cfg, g), want = tensors_of(cfg, g_ref);
  std::vector<std::string> names;
  g.for_each(cfg, [&](const std::string& name, Tensor<T>&) { names.push_back(name); });
  int64_t held = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    std::vector<double> v(size_t(mine[i]->numel()), 0.0);
    if (mine[i]->allocated()) std::copy(mine[i]->data(), mine[i]->data() + mine[i]->numel(), v.begin());
    held += mine[i]->allocated() && mine[i]->numel() > 0;
    comm.sum_all(v.data(), int64_t(v.size()));
    EXPECT_LT(rel_error(v.data(), want[i]->data(), int64_t(v.size())), tol) << names[i];
  }
  EXPECT_EQ(held, int64_t(mine.size()) - 2 * (cfg.num_ffn - cfg.num_ffn / comm.ep_size()))
      << "each rank holds the gradients of its own experts only";

  // The all-to-all's rows, from the routing decisions: FFN slots whose expert lives on
  // another rank of the group go out and their outputs come back (2 rows each, both ways
  // again in the backward); every other slot stays.
  const int ep = comm.ep_size();
  const ExpertShard here = ExpertShard::of(cfg, ep, comm.ep_rank());
  // remote FFN, local FFN, zero-computation, rows sent, dropped over capacity
  double counts[5] = {0, 0, 0, double(rows_forward), 0};
  for (int64_t s = 0; s < n * cfg.top_k; ++s) {
    const int e = c.router.idx[size_t(s)];
    EXPECT_EQ(c.plan.dropped(s), ref.plan.dropped(first * cfg.top_k + s)) << "slot " << s;
    if (c.plan.dropped(s)) counts[4] += 1;
    else if (cfg.kind(e) != ExpertKind::ffn) counts[2] += 1;
    else if (here.owns(e)) counts[1] += 1;
    else counts[0] += 1;
  }
  EXPECT_EQ(rows_backward, rows_forward) << "the backward mirrors the forward's exchange";
  comm.sum_all(counts, 5);
  EXPECT_EQ(counts[3], 2 * counts[0]) << "rows sent over the whole job against remote FFN slots";
  EXPECT_GT(counts[2], 0) << "the batch routes some slots to zero-computation experts";
  if (ep > 1) EXPECT_GT(counts[0], 0) << "some FFN slots must cross for the test to mean anything";
  else EXPECT_EQ(counts[0], 0) << "without expert parallelism nothing crosses";
  EXPECT_EQ(counts[0] + counts[1] + counts[2] + counts[4], double(all * cfg.top_k));
  EXPECT_EQ(counts[4], double(ref.plan.dropped_slots));
  if (capacity > 0) {
    EXPECT_GT(counts[4], 0) << "the capacity must drop slots for the test to mean anything";
  }
}

}  // namespace

TEST(ExpertParallelLayer, DoubleLinearRouterEqualsOneProcess) { check_layer<double>(false, 1e-12); }
TEST(ExpertParallelLayer, DoubleTwoLayerRouterEqualsOneProcess) { check_layer<double>(true, 1e-12); }
TEST(ExpertParallelLayer, FloatEqualsOneProcess) { check_layer<float>(false, 2e-5); }
TEST(ExpertParallelLayer, DoubleWithCapacityEqualsOneProcess) { check_layer<double>(false, 1e-12, 0.8); }

// Ranks per expert-parallel group from --ep-size N (default 1).
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int ep_size = 1;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--ep-size=", 10) == 0) ep_size = std::atoi(argv[i] + 10);
  if (!launched_by_mpirun()) {
    std::fprintf(stderr, "expert_parallel_test: start it with mpirun -np N\n");
    return 1;
  }
  auto comm = start_distributed(ep_size);
  g_comm = comm.get();
  return RUN_ALL_TESTS();
}
