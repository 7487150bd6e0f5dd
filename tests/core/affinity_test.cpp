// Thread pinning: one CPU per OpenMP thread, all different, when the team uses every CPU
// the process may run on; a child-process guard that hands the calling thread every CPU
// back and restores its own set afterwards; idle workers released.
#include <dirent.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "core/affinity.h"
#include "core/parallel.h"

using namespace moepp;

namespace {
cpu_set_t thread_cpus() {
  cpu_set_t s;
  CPU_ZERO(&s);
  EXPECT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(s), &s), 0);
  return s;
}
int cpu_count() {
  const cpu_set_t s = thread_cpus();
  return CPU_COUNT(&s);
}
int first_cpu(const cpu_set_t& s) {
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &s)) return c;
  return -1;
}
}  // namespace

TEST(Affinity, PinsOneThreadPerCpuWhenTheTeamUsesThemAll) {
  if (std::getenv("OMP_PROC_BIND") || std::getenv("GOMP_CPU_AFFINITY")) GTEST_SKIP() << "binding set by the environment";
  const cpu_set_t all = thread_cpus();
  const int cpus = CPU_COUNT(&all);
  const int saved = max_threads();
  if (cpus > 1) {
    set_threads(cpus - 1);  // fewer threads than CPUs: left to the scheduler
    EXPECT_FALSE(pin_threads_to_cpus());
    EXPECT_EQ(cpu_count(), cpus);
  }
  set_threads(cpus);
  ASSERT_TRUE(pin_threads_to_cpus());
  std::vector<int> count(static_cast<size_t>(cpus)), cpu(static_cast<size_t>(cpus));
#pragma omp parallel num_threads(cpus)
  {
    const cpu_set_t mine = thread_cpus();
    count[size_t(omp_get_thread_num())] = CPU_COUNT(&mine);
    cpu[size_t(omp_get_thread_num())] = first_cpu(mine);
  }
  std::set<int> distinct;
  for (int t = 0; t < cpus; ++t) {
    EXPECT_EQ(count[size_t(t)], 1) << "thread " << t;
    EXPECT_TRUE(CPU_ISSET(cpu[size_t(t)], &all)) << "thread " << t << " on cpu " << cpu[size_t(t)];
    distinct.insert(cpu[size_t(t)]);
  }
  EXPECT_EQ(int(distinct.size()), cpus);
  {
    const ScopedUnpin unpin;  // a child started here would get every CPU
    EXPECT_EQ(cpu_count(), cpus);
  }
  EXPECT_EQ(cpu_count(), 1);  // and the thread's own CPU is back
  set_threads(saved);
}

namespace {
int process_threads() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}
}  // namespace

TEST(Threads, ReleasingIdleWorkersEndsThemAndTheNextRegionStartsNewOnes) {
  // A thread that ran a parallel region keeps its team's workers, idle; the server releases
  // the loading thread's so that only the decoder's team remains (core/parallel.h).
  std::thread([] {
    set_threads(2);
    std::vector<int> seen(2, 0);
#pragma omp parallel num_threads(2)
    seen[size_t(omp_get_thread_num())] = 1;
    if (seen[1] == 0) GTEST_SKIP() << "the runtime gave one thread";
    const int with_workers = process_threads();
    release_idle_threads();
    // The worker is told to end and ends on its own time: the kernel may list it a moment
    // after the call returns.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (process_threads() != with_workers - 1 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(process_threads(), with_workers - 1);
#pragma omp parallel num_threads(2)
    seen[size_t(omp_get_thread_num())] = 2;
    EXPECT_EQ(seen[1], 2);
    EXPECT_EQ(process_threads(), with_workers);
  }).join();
}
