// bf16 mixed precision for training (train --precision bf16). Inside a GemmPrecisionScope
// set to bf16, gemm<float> and gemm_grouped<float> on this thread round A and B to bf16
// (nearest even) and multiply them on oneDNN's bf16 matmul (AMX or AVX-512 BF16),
// accumulating in f32 into the f32 C with alpha and beta as usual: the master weights,
// gradients, optimizer state and every reduction outside the products stay f32.
//
// The weights change once per optimizer step, so the trainer rounds them once per step into
// a Bf16Shadow and names it in the scope: an operand lying inside one of the shadow's
// tensors is read from the bf16 copy. An activation that several products read in turn is
// rounded once for them all where its code says so (Bf16OperandScope); any other operand is
// rounded per call into a per-thread scratch, padded with zeros so that the row counts of
// expert products, which change every batch, map to few oneDNN kernels (each costs ~0.5 ms
// to build). A scope set to f32 pins a region (the routers,
// whose top-k choices should not flip on a rounding) to f32 inside a bf16 one. Scopes nest
// and belong to the thread that made them; the shadow must outlive its scopes.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/uninit_vector.h"
#include "kernels/gemm.h"

namespace moepp {

enum class GemmPrecision { f32, bf16 };
const char* gemm_precision_name(GemmPrecision p);
GemmPrecision parse_gemm_precision(const std::string& name);  // "f32" or "bf16"; anything else is an error naming it

// bf16 copies of a set of f32 tensors (the model's weight matrices), one per tensor.
class Bf16Shadow {
 public:
  using Span = std::pair<const float*, int64_t>;  // first element, element count
  // Rounds every span to bf16 on all threads. The set replaces the previous one; storage of
  // a span of the same size at the same index is reused.
  void refresh(const std::vector<Span>& spans);
  // The copy of the `extent` elements starting at p when they lie inside one span; else null.
  const uint16_t* find(const float* p, int64_t extent) const;
  // The copy of the span that starts at p and holds n elements, to write into (AdamW rounds
  // the weights it updates straight into it); null when no span is exactly that.
  uint16_t* copy_of(const float* p, int64_t n);
  // Whether the copies are of exactly these spans (same tensors, same sizes, any order).
  bool holds(std::vector<Span> spans) const;
  int64_t elements() const;

 private:
  struct Copy {
    const float* src = nullptr;
    int64_t n = 0;
    UninitVector<uint16_t> bits;
  };
  std::vector<Copy> copies_;  // sorted by src
};

class GemmPrecisionScope {
 public:
  // bf16 needs a CPU with native bf16 products (gemm_bf16_available()); elsewhere this fails
  // with a message that says so.
  explicit GemmPrecisionScope(GemmPrecision p, const Bf16Shadow* shadow = nullptr);
  ~GemmPrecisionScope();
  GemmPrecisionScope(const GemmPrecisionScope&) = delete;
  GemmPrecisionScope& operator=(const GemmPrecisionScope&) = delete;

 private:
  GemmPrecision prev_;
  const Bf16Shadow* prev_shadow_;
};

// An activation that several products on this thread read in turn (a layer's normed input
// read by the q, k and v projections, an output gradient read by its dX and dW products),
// rounded once: while the scope lives, this thread's bf16 products whose operand lies
// inside [x, x + n) read its copy instead of rounding their own. Outside a bf16 scope it
// does nothing. x must not change while the scope lives; scopes nest.
class Bf16OperandScope {
 public:
  // bits: x's copy rounded already by its producer (n elements, living as long as the
  // scope), which the products read, x itself then need not hold the values; null: x is
  // rounded here.
  Bf16OperandScope(const float* x, int64_t n, const uint16_t* bits = nullptr);
  ~Bf16OperandScope();
  Bf16OperandScope(const Bf16OperandScope&) = delete;
  Bf16OperandScope& operator=(const Bf16OperandScope&) = delete;

 private:
  bool active_ = false;
};

// Bf16OperandScope for code templated on the element type: double products have none.
template <typename T>
struct RoundOnce {
  RoundOnce(const T*, int64_t, const uint16_t* = nullptr) {}
};
template <>
struct RoundOnce<float> : Bf16OperandScope {
  using Bf16OperandScope::Bf16OperandScope;
};

// This thread's precision for f32 products (f32 outside any scope).
GemmPrecision gemm_precision();
// The shadow this thread's scope reads weights from (null outside one): what a worker needs
// to open the same scope for products it runs on the caller's behalf.
const Bf16Shadow* gemm_shadow();

// What gemm<float> runs in a bf16 scope (M, N, K > 0; arguments already checked).
void gemm_f32_as_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace moepp
