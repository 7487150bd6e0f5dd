#include "moe/experts/ffn.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "core/uninit_vector.h"
#include "kernels/gemm.h"
#include "kernels/int8_tiles.h"
#include "kernels/linear.h"
#include "kernels/quant.h"
#include "kernels/swiglu.h"

namespace moepp {

namespace {

// A packed expert whose products run on the bf16 GEMM: x rounded to bf16 with its rows
// padded to tiles (bf16_gemm_rows), the up projection into this thread's scratch, SwiGLU
// written straight as bf16 rows (what packed_linear would round them to), and only the M
// real rows of the down projection copied out. The same arithmetic as linear, swiglu_forward
// and linear, without copying the up projection's padded output out and the hidden rows in.
void expert_forward_bf16(const PackedMatrix& up, const PackedMatrix& down, const float* x, int64_t M, float* o) {
  const int64_t D = up.cols, I = down.cols, Mp = bf16_gemm_rows(M);
  thread_local UninitVector<uint16_t> x_buffer, h_buffer;
  thread_local UninitVector<float> u_buffer;
  u_buffer.resize(size_t(Mp * 2 * I));
  h_buffer.resize(size_t(Mp * I));
  // Named through pointers: inside the workers the thread_locals' names are their own.
  const uint16_t* xb = round_rows_to_bf16_padded(x, M, D, D, x_buffer);
  uint16_t* hb = h_buffer.data();
  const float* u = u_buffer.data();
  packed_linear_bf16_rows(xb, Mp, up, 0.0f, u_buffer.data(), 2 * I);
  parallel_for(M, [&](int64_t m) {
    thread_local UninitVector<float> row;
    row.resize(size_t(I));
    swiglu_forward(u + m * 2 * I, row.data(), 1, I);
    round_to_bf16(row.data(), I, hb + m * I);
  });
  std::fill(hb + M * I, hb + Mp * I, uint16_t(0));
  packed_linear_bf16_padded(hb, M, down, o, D, false);
}

// A packed expert whose products both run on int8 tiles (kernels/int8_tiles.h): the up
// projection into u as packed_linear runs it, then SwiGLU's hidden rows computed and
// quantized into tiles in one pass (h never written), and the down projection. The same
// arithmetic as linear, swiglu_forward and linear: one pass over the hidden rows and one
// parallel region fewer per expert.
void expert_forward_tiles(const PackedMatrix& up, const PackedMatrix& down, const float* x, int64_t M, float* u,
                          float* o) {
  const int64_t D = up.cols, I = down.cols;
  packed_linear(x, M, D, up, u, 2 * I);
  thread_local TileRows h_tiles;
  quantize_swiglu_rows_for_tiles(u, M, I, h_tiles);
  packed_linear_tiles(h_tiles, down, o, D);
}

}  // namespace

template <typename T>
void ffn_experts_forward(const MoeConfig& cfg, const MoeWeights<T>& w, const DispatchPlan& plan,
                         FfnCache<T>& c) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, R = plan.ffn_rows();
  c.u.fit({R, 2 * I});
  c.h.fit({R, I});
  c.o.fit({R, D});
  c.gemm_rows = R;
  if (w.packed()) {
    for (int e = 0; e < cfg.num_ffn; ++e) {
      const int64_t r0 = plan.offsets[size_t(e)], M = plan.rows(e);
      if (M == 0) continue;
      if constexpr (std::is_same_v<T, float>) {
        // Both products on the bf16 GEMM, or each as packed_linear picks: a q8_0 or q4
        // expert whose I is no multiple of 32 keeps its down projection f32.
        const PackedMatrix &up = *w.up[size_t(e)].packed, &down = *w.down[size_t(e)].packed;
        if (packed_linear_uses_bf16(up, M) && packed_linear_uses_bf16(down, M)) {
          expert_forward_bf16(up, down, c.x.data() + r0 * D, M, c.o.data() + r0 * D);
          continue;
        }
        if (packed_linear_uses_tiles(up, M) && packed_linear_uses_tiles(down, M)) {
          expert_forward_tiles(up, down, c.x.data() + r0 * D, M, c.u.data() + r0 * 2 * I, c.o.data() + r0 * D);
          continue;
        }
      }
      linear(w.up[size_t(e)], c.x.data() + r0 * D, M, D, c.u.data() + r0 * 2 * I, 2 * I);
      swiglu_forward(c.u.data() + r0 * 2 * I, c.h.data() + r0 * I, M, I);
      linear(w.down[size_t(e)], c.h.data() + r0 * I, M, I, c.o.data() + r0 * D, D);
    }
    return;
  }
  std::vector<GemmProblem<T>> up, down;
  for (int e = 0; e < cfg.num_ffn; ++e) {
    const int64_t r0 = plan.offsets[size_t(e)], M = plan.rows(e);
    if (M == 0) continue;
    up.push_back({M, 2 * I, D, c.x.data() + r0 * D, D, w.up[size_t(e)].dense, D,
                  c.u.data() + r0 * 2 * I, 2 * I, T(0)});
    down.push_back({M, D, I, c.h.data() + r0 * I, I, w.down[size_t(e)].dense, I,
                    c.o.data() + r0 * D, D, T(0)});
  }
  gemm_grouped<T>(Trans::N, Trans::T, up);
  swiglu_forward(c.u.data(), c.h.data(), R, I);
  gemm_grouped<T>(Trans::N, Trans::T, down);
}

template <typename T>
void ffn_experts_backward(const MoeConfig& cfg, const MoeParams<T>& w, const DispatchPlan& plan,
                          const FfnCache<T>& c, const T* do_, T* dh, T* du, T* dx,
                          MoeParams<T>& grad, GradMode mode) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, R = plan.ffn_rows();
  // Overwriting, the weight-gradient GEMMs take beta = 0; on the panel kernel an expert's
  // few dozen tokens then go to memory with non-temporal stores (kernels/gemm_panels.h).
  const T beta = mode == GradMode::overwrite ? T(0) : T(1);
  if (mode == GradMode::overwrite)
    for (int e = 0; e < cfg.num_ffn; ++e)
      if (plan.rows(e) == 0) {
        grad.up[size_t(e)].zero();
        grad.down[size_t(e)].zero();
      }
  // dH = dO down;  dDown += dO^T H
  std::vector<GemmProblem<T>> dh_p, ddown_p;
  for (int e = 0; e < cfg.num_ffn; ++e) {
    const int64_t r0 = plan.offsets[size_t(e)], M = plan.rows(e);
    if (M == 0) continue;
    dh_p.push_back({M, I, D, do_ + r0 * D, D, w.down[size_t(e)].data(), I, dh + r0 * I, I, T(0)});
    ddown_p.push_back({D, I, M, do_ + r0 * D, D, c.h.data() + r0 * I, I, grad.down[size_t(e)].data(), I, beta});
  }
  gemm_grouped<T>(Trans::N, Trans::N, dh_p);
  gemm_grouped<T>(Trans::T, Trans::N, ddown_p);
  swiglu_backward(c.u.data(), dh, du, R, I, /*accumulate=*/false);
  // dUp += dU^T X;  dX = dU up
  std::vector<GemmProblem<T>> dup_p, dx_p;
  for (int e = 0; e < cfg.num_ffn; ++e) {
    const int64_t r0 = plan.offsets[size_t(e)], M = plan.rows(e);
    if (M == 0) continue;
    dup_p.push_back({2 * I, D, M, du + r0 * 2 * I, 2 * I, c.x.data() + r0 * D, D, grad.up[size_t(e)].data(), D, beta});
    dx_p.push_back({M, D, 2 * I, du + r0 * 2 * I, 2 * I, w.up[size_t(e)].data(), D, dx + r0 * D, D, T(0)});
  }
  gemm_grouped<T>(Trans::T, Trans::N, dup_p);
  gemm_grouped<T>(Trans::N, Trans::N, dx_p);
}

template struct FfnCache<float>;
template struct FfnCache<double>;
template void ffn_experts_forward<float>(const MoeConfig&, const MoeWeights<float>&, const DispatchPlan&, FfnCache<float>&);
template void ffn_experts_forward<double>(const MoeConfig&, const MoeWeights<double>&, const DispatchPlan&, FfnCache<double>&);
template void ffn_experts_backward<float>(const MoeConfig&, const MoeParams<float>&, const DispatchPlan&, const FfnCache<float>&, const float*, float*, float*, float*, MoeParams<float>&, GradMode);
template void ffn_experts_backward<double>(const MoeConfig&, const MoeParams<double>&, const DispatchPlan&, const FfnCache<double>&, const double*, double*, double*, double*, MoeParams<double>&, GradMode);

}  // namespace moepp
