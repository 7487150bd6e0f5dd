#include "core/affinity.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <cstdlib>
#include <vector>

namespace moepp {

namespace {

// The CPU set the process had when first asked, before any pinning.
const cpu_set_t& process_cpus() {
  static const cpu_set_t set = [] {
    cpu_set_t s;
    CPU_ZERO(&s);
    if (sched_getaffinity(0, sizeof(s), &s) != 0) CPU_ZERO(&s);
    return s;
  }();
  return set;
}

}  // namespace

bool pin_threads_to_cpus() {
  if (std::getenv("OMP_PROC_BIND") != nullptr || std::getenv("GOMP_CPU_AFFINITY") != nullptr) return false;
  const cpu_set_t& all = process_cpus();
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &all)) cpus.push_back(c);
  const int threads = omp_get_max_threads();
  if (cpus.empty() || threads != int(cpus.size()) || omp_in_parallel()) return false;
  bool ok = true;
#pragma omp parallel num_threads(threads) reduction(&& : ok)
  {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus[size_t(omp_get_thread_num())], &one);
    ok = pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
  }
  return ok;
}

ScopedUnpin::ScopedUnpin() {
  CPU_ZERO(&saved_);
  if (pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_) != 0) return;
  const cpu_set_t& all = process_cpus();
  if (CPU_COUNT(&all) == 0) return;
  restore_ = pthread_setaffinity_np(pthread_self(), sizeof(all), &all) == 0;
}

ScopedUnpin::~ScopedUnpin() {
  if (restore_) pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_);
}

}  // namespace moepp
