// Learning-rate schedule: linear warmup from 0 to lr over `warmup` steps, then cosine decay
// to min_lr at `total` steps (and min_lr after).
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

}  // namespace moepp
