// Thread placement. On a machine whose every CPU the team uses, each OpenMP thread is
// pinned to a CPU of its own: unpinned, the scheduler at times runs two spinning threads
// of the team on one CPU until a time slice ends, and an OpenMP barrier then costs
// milliseconds (2-vCPU VM: a 20x20x2048 oneDNN product took 8-16 ms instead of 0.03;
// the MoE++ layer's backward at z 0.8, 246 ms instead of 209). With fewer threads than
// CPUs nothing is pinned (other processes may want the rest), and an OMP_PROC_BIND or
// GOMP_CPU_AFFINITY in the environment is the user's choice and left alone.
#pragma once
#include <sched.h>

namespace moepp {

// Pins the current OpenMP team (omp_get_max_threads() threads) one thread per CPU when the
// conditions above hold; returns whether it pinned. Idempotent.
bool pin_threads_to_cpus();

// While alive, the calling thread may run on every CPU the process started with again
// (for a child process started from it, which inherits its CPU set); the thread's own
// CPU set is restored on destruction.
class ScopedUnpin {
 public:
  ScopedUnpin();
  ~ScopedUnpin();
  ScopedUnpin(const ScopedUnpin&) = delete;
  ScopedUnpin& operator=(const ScopedUnpin&) = delete;

 private:
  cpu_set_t saved_;
  bool restore_ = false;
};

}  // namespace moepp
