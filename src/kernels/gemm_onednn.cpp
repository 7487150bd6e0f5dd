// oneDNN matmul provider for f32 GEMM. Primitive creation costs tens of microseconds, so
// primitives are cached per (shape, strides, alpha, beta); the cache is bounded because
// per-expert row counts change every batch. Scratchpads are user-managed: one buffer,
// grown to the largest any primitive asks for, instead of one per cached primitive.
#ifdef MOEPP_GEMM_ONEDNN
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/gemm.h"

namespace moepp {

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, int, int, int64_t, int64_t, int64_t, float, float>;

struct Cached {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

struct OneDnnState {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, Cached> cache;
  std::mutex mutex;
  std::vector<char> scratch;
};

OneDnnState& state() {
  static OneDnnState s;
  return s;
}

constexpr size_t kMaxCachedPrimitives = 1024;

}  // namespace

void gemm_f32_onednn(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                     float* C, int64_t ldc) {
  using dnnl::memory;
  auto& s = state();
  const Key key{M, N, K, int(ta), int(tb), lda, ldb, ldc, alpha, beta};
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.cache.find(key);
  if (it == s.cache.end()) {
    if (s.cache.size() >= kMaxCachedPrimitives) s.cache.clear();
    const memory::desc a_md({M, K}, memory::data_type::f32,
                            ta == Trans::N ? memory::dims{lda, 1} : memory::dims{1, lda});
    const memory::desc b_md({K, N}, memory::data_type::f32,
                            tb == Trans::N ? memory::dims{ldb, 1} : memory::dims{1, ldb});
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
  const auto& pd = it->second.pd;
  const memory::desc scratch_md = pd.scratchpad_desc();
  if (scratch_md.get_size() > s.scratch.size()) s.scratch.resize(scratch_md.get_size());
  memory a_mem(pd.src_desc(), s.engine, const_cast<float*>(A));
  memory b_mem(pd.weights_desc(), s.engine, const_cast<float*>(B));
  memory c_mem(pd.dst_desc(), s.engine, C);
  memory scratch_mem(scratch_md, s.engine, s.scratch.data());
  it->second.prim.execute(s.stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem},
                                     {DNNL_ARG_SCRATCHPAD, scratch_mem}});
  s.stream.wait();
}

}  // namespace moepp
#endif
