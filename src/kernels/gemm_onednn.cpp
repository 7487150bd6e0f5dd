// oneDNN matmul provider for f32 GEMM, and for the bf16 products of packed bf16/q8_0
// weights (bf16 in, f32 out and accumulation: AMX tiles or AVX-512 BF16 where the CPU has
// them). Primitive creation costs tens of microseconds, so
// primitives are cached per (shape, strides, alpha, beta); the cache is bounded because
// per-expert row counts change every batch. Scratchpads are user-managed: one buffer a thread,
// grown to the largest any primitive asks for, instead of one per cached primitive.
#ifdef MOEPP_GEMM_ONEDNN
#include <cstdint>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/gemm.h"

namespace moepp {

namespace {

// (M, N, K, ta, tb, lda, ldb, ldc, alpha, beta, bf16 inputs)
using Key = std::tuple<int64_t, int64_t, int64_t, int, int, int64_t, int64_t, int64_t, float, float, bool>;

struct Cached {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

struct OneDnnState {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::map<Key, Cached> cache;
  std::mutex mutex;  // guards the cache
};

OneDnnState& state() {
  static OneDnnState s;
  return s;
}

// Each thread executes on its own stream and scratchpad, so that threads can run products
// at the same time (a grouped product's experts, one a thread: kernels/gemm.h).
struct ThreadState {
  dnnl::stream stream{state().engine};
  std::vector<char> scratch;
};

ThreadState& thread_state() {
  thread_local ThreadState t;
  return t;
}

constexpr size_t kMaxCachedPrimitives = 1024;


// One cached matmul: C = alpha op(A) op(B) + beta C with A and B of type `in`, C f32.
void run_matmul(dnnl::memory::data_type in, Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                const void* A, int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  using dnnl::memory;
  auto& s = state();
  const Key key{M, N, K, int(ta), int(tb), lda, ldb, ldc, alpha, beta, in == memory::data_type::bf16};
  Cached run;  // handles (reference counted): the cache may be cleared while this one runs
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.cache.find(key);
    if (it == s.cache.end()) {
      if (s.cache.size() >= kMaxCachedPrimitives) s.cache.clear();
      const memory::desc a_md({M, K}, in, ta == Trans::N ? memory::dims{lda, 1} : memory::dims{1, lda});
      const memory::desc b_md({K, N}, in, tb == Trans::N ? memory::dims{ldb, 1} : memory::dims{1, ldb});
      const memory::desc c_md({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
      if (beta != 0.0f) {
        dnnl::post_ops ops;
        ops.append_sum(beta);
        attr.set_post_ops(ops);
      }
      try {
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, s.engine);
        it = s.cache.emplace(key, Cached{pd, dnnl::matmul(pd)}).first;
      } catch (const dnnl::error& e) {
        fail("oneDNN matmul creation failed for M=", M, " N=", N, " K=", K, ": ", e.what());
      }
    }
    run = it->second;
  }
  auto& t = thread_state();
  const auto& pd = run.pd;
  const memory::desc scratch_md = pd.scratchpad_desc();
  if (scratch_md.get_size() > t.scratch.size()) t.scratch.resize(scratch_md.get_size());
  memory a_mem(pd.src_desc(), s.engine, const_cast<void*>(A));
  memory b_mem(pd.weights_desc(), s.engine, const_cast<void*>(B));
  memory c_mem(pd.dst_desc(), s.engine, C);
  memory scratch_mem(scratch_md, s.engine, t.scratch.data());
  run.prim.execute(t.stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem},
                              {DNNL_ARG_SCRATCHPAD, scratch_mem}});
  t.stream.wait();
}

}  // namespace

void gemm_f32_onednn(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                     float* C, int64_t ldc) {
  run_matmul(dnnl::memory::data_type::f32, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool gemm_bf16_available() {
  // Only where the CPU multiplies bf16 natively: elsewhere oneDNN converts (or runs its
  // reference kernel) and the f32 path is faster.
  // oneDNN's ISA values are cumulative bit sets: AMX's includes AVX-512 BF16's.
  static const bool native = [] {
    const auto bf16_bits = unsigned(dnnl::cpu_isa::avx512_core_bf16);
    return (unsigned(dnnl::get_effective_cpu_isa()) & bf16_bits) == bf16_bits;
  }();
  return native;
}

void gemm_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  run_matmul(dnnl::memory::data_type::bf16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_bf16_nt(int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* W, int64_t ldw,
                  float beta, float* C, int64_t ldc) {
  run_matmul(dnnl::memory::data_type::bf16, Trans::N, Trans::T, M, N, K, 1.0f, A, lda, W, ldw, beta, C, ldc);
}

}  // namespace moepp
#endif
