// The training schedule: the learning rate (linear warmup from 0 to lr over `warmup`
// steps, then cosine decay to min_lr at `total` steps, and min_lr after) and when the
// validation passes fall (after every `eval_every` steps short of the last, and at the end).
#pragma once
#include <cmath>
#include <cstdint>

namespace moepp {

struct Schedule {
  double lr = 1e-3, min_lr = 1e-4;
  int64_t warmup = 0, total = 1;

  double at(int64_t step) const {  // step counts from 0
    if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
    if (step >= total) return min_lr;
    const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
  }
};

// Validation passes still to run once `done` of `total` steps are finished: the periodic
// ones after steps k < total with k % eval_every == 0 (eval_every 0: none) and the final one.
inline int64_t validation_passes_left(int64_t done, int64_t total, int64_t eval_every) {
  if (done >= total) return 0;
  const int64_t periodic = eval_every > 0 ? (total - 1) / eval_every - done / eval_every : 0;
  return periodic + 1;
}

}  // namespace moepp
