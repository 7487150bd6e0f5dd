// The replica digest (train/replicas.h) that --check-replicas compares across ranks: it must
// see any change to a replicated weight, ignore the FFN experts when they are sharded, and
// not depend on the thread count that computed it.
#include <gtest/gtest.h>

#include "core/parallel.h"
#include "core/rng.h"
#include "model/config.h"
#include "model/params.h"
#include "train/replicas.h"

using namespace moepp;

namespace {

struct Model {
  ModelConfig cfg = ModelConfig::preset("tiny", 32);
  ModelParams<float> p = ModelParams<float>::zeros(cfg);
  Model() {
    Rng rng(5);
    p.init(cfg, rng);
  }
  MoeParams<float>& first_moe() {
    for (auto& l : p.layers)
      if (l.is_moe) return l.moe;
    throw std::runtime_error("the tiny preset has no MoE layer");
  }
};

}  // namespace

TEST(ReplicaDigest, SeesOneFlippedBitOfAReplicatedWeight) {
  Model m;
  const uint64_t before = replicated_digest(m.cfg, m.p, 1);
  m.p.final_norm[3] = std::nextafter(m.p.final_norm[3], 2.0f);
  EXPECT_NE(replicated_digest(m.cfg, m.p, 1), before);
  const uint64_t expert_parallel = replicated_digest(m.cfg, m.p, 2);
  m.first_moe().wg[7] += 1.0f;  // the router is replicated under expert parallelism too
  EXPECT_NE(replicated_digest(m.cfg, m.p, 2), expert_parallel);
}

TEST(ReplicaDigest, CoversExpertsOnlyWhenTheyAreReplicated) {
  Model m;
  const uint64_t data_parallel = replicated_digest(m.cfg, m.p, 1), expert_parallel = replicated_digest(m.cfg, m.p, 2);
  m.first_moe().up[1][0] += 1.0f;
  EXPECT_NE(replicated_digest(m.cfg, m.p, 1), data_parallel);
  EXPECT_EQ(replicated_digest(m.cfg, m.p, 2), expert_parallel);
}

TEST(ReplicaDigest, IsTheSameAtAnyThreadCount) {
  Model m;
  const int threads = max_threads();
  set_threads(1);
  const uint64_t one = replicated_digest(m.cfg, m.p, 1);
  set_threads(2);
  const uint64_t two = replicated_digest(m.cfg, m.p, 1);
  set_threads(threads);
  EXPECT_EQ(one, two);
}
