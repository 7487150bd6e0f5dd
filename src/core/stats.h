// The statistic that benchmarks and experiment reports quote of repeated timings: the
// median, robust to the odd slow repeat on a shared machine.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

namespace moepp {

// The middle value (the upper of the two middles for an even count); 0 when empty.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const auto mid = v.begin() + std::ptrdiff_t(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

}  // namespace moepp
