// ProductClock: wall time spent in products (gemm, gemm_grouped; training's are f32) while
// one is alive, for benchmarks that split a step into the products, which bf16 speeds up,
// and the rest, which it does not (bench/train). Only calls made outside a parallel region
// count, and only the outermost on a thread, so a product inside gemm_grouped is not
// counted twice. Off by default: a product then pays one relaxed atomic load. One clock at
// a time, on any thread.
#pragma once
#include <chrono>
#include <cstdint>

namespace moepp {

class ProductClock {
 public:
  ProductClock();  // starts counting from zero
  ~ProductClock();
  ProductClock(const ProductClock&) = delete;
  ProductClock& operator=(const ProductClock&) = delete;
  double seconds() const;  // counted so far
};

// What gemm and gemm_grouped hold for their whole call.
class ProductTiming {
 public:
  ProductTiming();
  ~ProductTiming();
  ProductTiming(const ProductTiming&) = delete;
  ProductTiming& operator=(const ProductTiming&) = delete;

 private:
  bool nested_ = false;    // counted in this thread's depth
  bool counting_ = false;  // the outermost, outside a parallel region
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moepp
