#include "kernels/mixed_precision.h"

#include <algorithm>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/quant.h"

namespace moepp {

namespace {

thread_local GemmPrecision t_precision = GemmPrecision::f32;
thread_local const Bf16Shadow* t_shadow = nullptr;

constexpr int64_t kRoundBlock = 1 << 15;  // elements one thread rounds at a time

// Row counts of expert products change with every batch, and oneDNN builds (JIT-compiles)
// a kernel per shape: ~0.5 ms each, several times the product itself at the small preset.
// Rounded operands are therefore padded with zeros to a multiple of kShapeBucket in the
// dimensions that vary (M, and K for the weight gradients, whose reduction runs over an
// expert's rows), so a run needs a bounded set of shapes. Zero rows and columns add nothing
// to the sums; padded rows of C land in a scratch and are dropped.
constexpr int64_t kShapeBucket = 32;

int64_t bucket(int64_t n) { return (n + kShapeBucket - 1) / kShapeBucket * kShapeBucket; }

// Rounds `rows` stored rows of `cols` elements (row stride ld) into out [rows_pad, cols_pad],
// zero where out reaches past the operand.
void round_padded(const float* x, int64_t rows, int64_t cols, int64_t ld, int64_t rows_pad, int64_t cols_pad,
                  uint16_t* out) {
  if (ld == cols && cols == cols_pad) {
    const int64_t n = rows * cols;
    parallel_for((n + kRoundBlock - 1) / kRoundBlock, [&](int64_t b) {
      const int64_t i0 = b * kRoundBlock;
      round_to_bf16(x + i0, std::min(kRoundBlock, n - i0), out + i0);
    });
  } else {
    parallel_for(rows, [&](int64_t r) {
      uint16_t* o = out + r * cols_pad;
      round_to_bf16(x + r * ld, cols, o);
      std::fill(o + cols, o + cols_pad, uint16_t(0));
    }, std::max<int64_t>(2, kRoundBlock / std::max<int64_t>(cols_pad, 1)));
  }
  std::fill(out + rows * cols_pad, out + rows_pad * cols_pad, uint16_t(0));
}

// An operand as the bf16 product reads it: the shadow's copy (same stride) or a rounded,
// zero-padded contiguous copy in a scratch.
struct Bf16Operand {
  const uint16_t* data;
  int64_t ld;
};

// The operands rounded once by this thread's Bf16OperandScopes, innermost last. Entries
// past t_operand_depth keep their storage for the next scope.
struct RoundedOperand {
  const float* src = nullptr;
  int64_t n = 0;
  UninitVector<uint16_t> bits;
  const uint16_t* adopted = nullptr;  // the producer's copy, where it rounded the operand itself
  const uint16_t* copy() const { return adopted ? adopted : bits.data(); }
};
thread_local std::vector<RoundedOperand> t_operands;
thread_local size_t t_operand_depth = 0;

// An operand's bf16 copy where one exists already, with the operand's stride: in the
// shadow's weights or in an operand rounded once by a Bf16OperandScope; else null.
const uint16_t* existing_copy(const float* x, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t extent = (rows - 1) * ld + cols;
  if (t_shadow)
    if (const uint16_t* w = t_shadow->find(x, extent)) return w;
  for (size_t i = t_operand_depth; i-- > 0;) {
    const RoundedOperand& o = t_operands[i];
    if (x >= o.src && x - o.src + extent <= o.n) return o.copy() + (x - o.src);
  }
  return nullptr;
}

Bf16Operand rounded(const float* x, int64_t rows, int64_t cols, int64_t ld, int64_t rows_pad, int64_t cols_pad,
                    UninitVector<uint16_t>& scratch) {
  scratch.resize(size_t(rows_pad * cols_pad));
  round_padded(x, rows, cols, ld, rows_pad, cols_pad, scratch.data());
  return {scratch.data(), cols_pad};
}

}  // namespace

const char* gemm_precision_name(GemmPrecision p) { return p == GemmPrecision::bf16 ? "bf16" : "f32"; }

GemmPrecision parse_gemm_precision(const std::string& name) {
  if (name == "f32") return GemmPrecision::f32;
  if (name == "bf16") return GemmPrecision::bf16;
  fail("precision \"", name, "\" is not f32 or bf16");
}

void Bf16Shadow::refresh(const std::vector<Span>& spans) {
  std::vector<Copy> next(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    MOEPP_CHECK(spans[i].first && spans[i].second > 0, "Bf16Shadow: span ", i, " is empty");
    next[i].src = spans[i].first;
    next[i].n = spans[i].second;
    if (i < copies_.size() && copies_[i].n == spans[i].second) next[i].bits = std::move(copies_[i].bits);
    next[i].bits.resize(size_t(next[i].n));
  }
  std::sort(next.begin(), next.end(), [](const Copy& a, const Copy& b) { return a.src < b.src; });
  for (size_t i = 1; i < next.size(); ++i)
    MOEPP_CHECK(next[i - 1].src + next[i - 1].n <= next[i].src, "Bf16Shadow: spans overlap");
  // One pass over all spans in blocks, so small tensors do not each pay a parallel region.
  std::vector<std::pair<size_t, int64_t>> blocks;  // (copy, first element)
  for (size_t c = 0; c < next.size(); ++c)
    for (int64_t i0 = 0; i0 < next[c].n; i0 += kRoundBlock) blocks.emplace_back(c, i0);
  parallel_for(int64_t(blocks.size()), [&](int64_t b) {
    const auto [c, i0] = blocks[size_t(b)];
    Copy& copy = next[c];
    round_to_bf16(copy.src + i0, std::min(kRoundBlock, copy.n - i0), copy.bits.data() + i0);
  });
  copies_ = std::move(next);
}

const uint16_t* Bf16Shadow::find(const float* p, int64_t extent) const {
  auto it = std::upper_bound(copies_.begin(), copies_.end(), p, [](const float* q, const Copy& c) { return q < c.src; });
  if (it == copies_.begin()) return nullptr;
  --it;
  const int64_t offset = p - it->src;
  if (offset + extent > it->n) return nullptr;
  return it->bits.data() + offset;
}

uint16_t* Bf16Shadow::copy_of(const float* p, int64_t n) {
  auto it = std::lower_bound(copies_.begin(), copies_.end(), p, [](const Copy& c, const float* q) { return c.src < q; });
  return it != copies_.end() && it->src == p && it->n == n ? it->bits.data() : nullptr;
}

bool Bf16Shadow::holds(std::vector<Span> spans) const {
  if (spans.size() != copies_.size()) return false;
  std::sort(spans.begin(), spans.end());
  for (size_t i = 0; i < spans.size(); ++i)
    if (spans[i].first != copies_[i].src || spans[i].second != copies_[i].n) return false;
  return true;
}

int64_t Bf16Shadow::elements() const {
  int64_t n = 0;
  for (const auto& c : copies_) n += c.n;
  return n;
}

Bf16OperandScope::Bf16OperandScope(const float* x, int64_t n, const uint16_t* bits) {
  if (t_precision != GemmPrecision::bf16 || !x || n <= 0) return;
  if (t_operands.size() <= t_operand_depth) t_operands.resize(t_operand_depth + 1);
  RoundedOperand& o = t_operands[t_operand_depth];
  o.src = x;
  o.n = n;
  o.adopted = bits;
  if (!bits) {
    o.bits.resize(size_t(n));
    round_padded(x, 1, n, n, 1, n, o.bits.data());
  }
  ++t_operand_depth;
  active_ = true;
}

Bf16OperandScope::~Bf16OperandScope() {
  if (active_) --t_operand_depth;
}

GemmPrecisionScope::GemmPrecisionScope(GemmPrecision p, const Bf16Shadow* shadow)
    : prev_(t_precision), prev_shadow_(t_shadow) {
  MOEPP_CHECK(p != GemmPrecision::bf16 || gemm_bf16_available(),
              "bf16 products need a CPU with AVX-512 BF16 or AMX and a build with oneDNN as its GEMM provider; "
              "this one has none (use f32)");
  t_precision = p;
  if (shadow) t_shadow = shadow;
}

GemmPrecisionScope::~GemmPrecisionScope() {
  t_precision = prev_;
  t_shadow = prev_shadow_;
}

GemmPrecision gemm_precision() { return t_precision; }

const Bf16Shadow* gemm_shadow() { return t_shadow; }

void gemm_f32_as_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  thread_local UninitVector<uint16_t> scratch_a, scratch_b;
  thread_local UninitVector<float> scratch_c;
  // Stored shapes: op(A) is [M, K], so A is stored [M, K] or, transposed, [K, M]; likewise B.
  const bool a_t = ta == Trans::T, b_t = tb == Trans::T;
  const uint16_t* a_copy = a_t ? existing_copy(A, K, M, lda) : existing_copy(A, M, K, lda);
  const uint16_t* b_copy = b_t ? existing_copy(B, N, K, ldb) : existing_copy(B, K, N, ldb);
  const int64_t Mp = a_copy ? M : bucket(M);
  const int64_t Kp = a_copy || b_copy ? K : bucket(K);
  const Bf16Operand a = a_copy ? Bf16Operand{a_copy, lda}
                        : a_t    ? rounded(A, K, M, lda, Kp, Mp, scratch_a)
                                 : rounded(A, M, K, lda, Mp, Kp, scratch_a);
  const Bf16Operand b = b_copy ? Bf16Operand{b_copy, ldb}
                        : b_t    ? rounded(B, N, K, ldb, N, Kp, scratch_b)
                                 : rounded(B, K, N, ldb, Kp, N, scratch_b);
  if (Mp == M) return gemm_bf16(ta, tb, M, N, Kp, alpha, a.data, a.ld, b.data, b.ld, beta, C, ldc);
  scratch_c.resize(size_t(Mp * N));
  gemm_bf16(ta, tb, Mp, N, Kp, alpha, a.data, a.ld, b.data, b.ld, 0.0f, scratch_c.data(), N);
  const float* padded_c = scratch_c.data();  // this thread's scratch: the workers have their own
  parallel_for(M, [&](int64_t i) {
    const float* s = padded_c + i * N;
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      std::copy(s, s + N, c);
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] = s[j] + beta * c[j];
    }
  }, std::max<int64_t>(2, kRoundBlock / std::max<int64_t>(N, 1)));
}

}  // namespace moepp
