#include "kernels/gemm_panels.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <utility>
#include <vector>

#include "core/aligned_vector.h"
#include "core/cpu_caches.h"
#include "core/error.h"
#include "core/parallel.h"
#include "kernels/vec_math.h"

namespace moepp {

namespace {

constexpr int64_t kMaxRowsPerTile = 14;  // 14 x 32 accumulators: 28 of the 32 vector registers
// Tuning knobs, overridable for experiments (measurements: docs/decisions.md, "Panel
// kernel tuning").
#ifndef MOEPP_PANEL_DEPTH
#define MOEPP_PANEL_DEPTH 512
#endif
constexpr int64_t kDepth = MOEPP_PANEL_DEPTH;  // K per pass (a 64 KB panel slice, in L2 across row tiles)
// K per pass on a row-major B read in place (or copied by slices): a slice is then 128-byte
// pieces of rows kilobytes apart, and shallower slices keep the rows a group reads close
// together in time.
constexpr int64_t kRowMajorDepth = 128;
// K per pass where the slices are copied first (rows that alias in the cache, as W_down's
// 16 KB rows in dH = dO W_down): the copy is contiguous, so the reason for shallow slices
// is gone, and each pass over the output costs a load and a store of every output tile,
// whose rows (dH's, 16 KB apart) alias too.
constexpr int64_t kCopiedDepth = 256;
#ifndef MOEPP_PANEL_AHEAD
#define MOEPP_PANEL_AHEAD 1
#endif
constexpr int64_t kAhead = MOEPP_PANEL_AHEAD;  // panel slices between a prefetch and its use
constexpr int64_t kRowsPerChunk = 512;  // rows of x per pass (their packed K block, 1 MB, stays in L2)
// On a 2 MB L2, a B of at most 1 MB (one K block) stays there whole, and the output is
// walked by row tiles instead of by panel groups; on smaller L2s that walk loses, so it is
// kept to L2s of 2 MB and more.
bool rows_outer_suits(int64_t b_bytes) {
  const int64_t l2 = l2_cache().bytes;
  return l2 >= (int64_t(2) << 20) && b_bytes <= l2 / 2;
}
// Up to this depth panel_matmul_tn beats oneDNN on the weight gradients of 16 experts
// streamed from memory; deeper was not measured. Where OpenBLAS runs AVX-512 kernels,
// OpenBLAS per thread takes these beyond 40 tokens anyway (gemm.cpp).
constexpr int64_t kTnMaxDepth = 1024;

// Where the panels live: packed (PanelMatrix: panel p at base + p K 32, its rows 32 floats
// apart) or a row-major [K, N] matrix read in place (panel p = columns 32p.. of every row,
// at base + 32 p, rows ldb apart; the ragged last panel is read with masks).
struct PanelSource {
  const float* base;
  int64_t panel_stride, row_stride;
  bool copy = false;  // rows too far apart in cache terms: copy each slice before the tiles
  int64_t depth = kDepth;  // K per pass
  const float* slice(int64_t p, int64_t k0) const { return base + p * panel_stride + k0 * row_stride; }
};

// A row-major [K, N] matrix read in place, or slice by slice through a copy where its rows
// alias in the cache (and then in deeper passes: kCopiedDepth says why).
PanelSource row_major_source(const float* B, int64_t ldb, bool copy) {
  return PanelSource{B, kPanelWidth, ldb, copy, copy ? kCopiedDepth : kRowMajorDepth};
}

// What a tile kernel pulls toward the core while it computes, so that memory latency
// overlaps arithmetic: its share of the next panel slice (`rows` rows of 128 bytes,
// `stride` floats apart, into L2) and the rows of the output tile the next kernel call
// will read and write (into L1).
struct TilePrefetch {
  const float* slice = nullptr;
  int64_t rows = 0, stride = 0;
  const float* c_next = nullptr;
  int64_t c_rows = 0;
};

// How a tile kernel writes its output tile: adding to it, over it, or over it with
// non-temporal stores. `stream` is for a tile written once and not read again soon (one K
// block, no accumulation: the weight gradients of an expert's few dozen tokens, tens of MB
// per expert). Normal stores first read each line of a tile that is not in cache; at 52
// tokens that read is a third of the product's memory traffic.
enum class TileStore { add, overwrite, stream };

// c[MR, ncols] (+)= a[kc][MR] . b[kc][32 of ldb], a packed.
template <int MR>
void tile_kernel(int64_t kc, const float* a, const float* b, int64_t ldb, const TilePrefetch& pf, float* c,
                 int64_t ldc, int64_t ncols, TileStore store) {
#if defined(__AVX512F__)
  const __mmask16 k0 = tail_mask16(ncols), k1 = tail_mask16(ncols - 16);
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  for (int64_t k = 0, row = 0, crow = 0; k < kc; ++k, a += MR, b += ldb) {
    // Prefetches are scheduled every fourth step, each time issuing those due up to step
    // k + 3: the bookkeeping then costs a quarter of what it did on every step.
    if ((k & 3) == 0) {
      for (; row * kc < pf.rows * (k + 4) && row < pf.rows; ++row) {
        const char* line = reinterpret_cast<const char*>(pf.slice + row * pf.stride);
        _mm_prefetch(line, _MM_HINT_T1);
        _mm_prefetch(line + 64, _MM_HINT_T1);
      }
      // The next tile's output rows, spread over the first half of the steps (a shallow
      // K, as in the weight gradients, still prefetches them all).
      for (; crow < pf.c_rows && crow * kc < 2 * (k + 3) * pf.c_rows + 1; ++crow) {
        const float* line = pf.c_next + crow * ldc;
        _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(line + 16), _MM_HINT_T0);
      }
    }
    const __m512 b0 = _mm512_maskz_loadu_ps(k0, b), b1 = _mm512_maskz_loadu_ps(k1, b + 16);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(a[m]);
      acc0[m] = _mm512_fmadd_ps(am, b0, acc0[m]);
      acc1[m] = _mm512_fmadd_ps(am, b1, acc1[m]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    float* cm = c + m * ldc;
    if (store == TileStore::add) {
      acc0[m] = _mm512_add_ps(acc0[m], _mm512_maskz_loadu_ps(k0, cm));
      acc1[m] = _mm512_add_ps(acc1[m], _mm512_maskz_loadu_ps(k1, cm + 16));
    }
    // Non-temporal stores take whole aligned lines; a ragged or unaligned row stores normally.
    if (store == TileStore::stream && ncols == kPanelWidth && (reinterpret_cast<uintptr_t>(cm) & 63) == 0) {
      _mm512_stream_ps(cm, acc0[m]);
      _mm512_stream_ps(cm + 16, acc1[m]);
    } else {
      _mm512_mask_storeu_ps(cm, k0, acc0[m]);
      _mm512_mask_storeu_ps(cm + 16, k1, acc1[m]);
    }
  }
#else
  (void)pf;
  float acc[MR][kPanelWidth] = {};
  for (int64_t k = 0; k < kc; ++k, a += MR, b += ldb)
    for (int m = 0; m < MR; ++m)
      for (int64_t j = 0; j < ncols; ++j) acc[m][j] += a[m] * b[j];
  for (int m = 0; m < MR; ++m)
    for (int64_t j = 0; j < ncols; ++j) c[m * ldc + j] = (store == TileStore::add ? c[m * ldc + j] : 0.0f) + acc[m][j];
#endif
}

// Non-temporal stores are weakly ordered: fenced before the loop's barrier hands the output
// to other threads.
inline void store_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

using TileFn = void (*)(int64_t, const float*, const float*, int64_t, const TilePrefetch&, float*, int64_t, int64_t,
                        TileStore);

template <int... MR>
constexpr auto make_tile_table(std::integer_sequence<int, MR...>) {
  return std::array<TileFn, sizeof...(MR)>{&tile_kernel<MR + 1>...};
}
constexpr auto kTiles = make_tile_table(std::make_integer_sequence<int, kMaxRowsPerTile>{});

// Row tiles of a chunk of mc rows: as few as possible, sizes differing by at most one, so a
// 52-row expert runs 13+13+13+13 rather than 14+14+14+10.
struct RowTiles {
  int64_t count, base, extra;  // the first `extra` tiles have base + 1 rows
  explicit RowTiles(int64_t mc)
      : count((mc + kMaxRowsPerTile - 1) / kMaxRowsPerTile), base(mc / count), extra(mc % count) {}
  int64_t size(int64_t t) const { return base + (t < extra ? 1 : 0); }
  int64_t start(int64_t t) const { return t * base + std::min(t, extra); }
};

// Tile t's rows of x[m0 + row, k0 + k] into dst + start(t) * kc as [kc][tile rows]. When
// x_transposed, x is stored [K, M] (x[m, k] at k ldx + m) and each k's rows are contiguous.
void pack_rows(const float* x, int64_t ldx, bool x_transposed, int64_t m0, int64_t k0, int64_t kc,
               const RowTiles& tiles, int64_t t, float* dst) {
  const int64_t r0 = tiles.start(t), mr = tiles.size(t);
  float* d = dst + r0 * kc;
  if (x_transposed) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = x + (k0 + k) * ldx + m0 + r0;
      for (int64_t i = 0; i < mr; ++i) d[k * mr + i] = src[i];
    }
    return;
  }
  for (int64_t i = 0; i < mr; ++i) {
    const float* src = x + (m0 + r0 + i) * ldx + k0;
    for (int64_t k = 0; k < kc; ++k) d[k * mr + i] = src[k];
  }
}

}  // namespace

PanelMatrix PanelMatrix::pack(const float* w, int64_t rows, int64_t cols) {
  MOEPP_CHECK(rows >= 0 && cols > 0, "panel pack: bad matrix shape [", rows, ", ", cols, "]");
  PanelMatrix p;
  p.rows = rows;
  p.cols = cols;
  p.panels = Tensor<float>({p.num_panels(), cols, kPanelWidth});  // zeroed: the padding stays 0
  float* dst = p.panels.data();
  parallel_for(p.num_panels(), [&](int64_t q) {
    const int64_t n = std::min(kPanelWidth, rows - q * kPanelWidth);
    float* panel = dst + q * cols * kPanelWidth;
    // 16 columns at a time: the 32 source pieces and the 2 KB of panel they fill stay in
    // L1 (a whole source row at a time wrote every line of the panel 32 times over).
    for (int64_t k0 = 0; k0 < cols; k0 += 16) {
      const int64_t k1 = std::min(cols, k0 + 16);
      for (int64_t j = 0; j < n; ++j) {
        const float* src = w + (q * kPanelWidth + j) * cols;
        for (int64_t k = k0; k < k1; ++k) panel[k * kPanelWidth + j] = src[k];
      }
    }
  });
  return p;
}

void PanelMatrix::unpack_rows(int64_t r0, int64_t n, float* out) const {
  MOEPP_CHECK(r0 >= 0 && n >= 0 && r0 + n <= rows, "panel unpack: rows [", r0, ", ", r0 + n, ") of ", rows);
  const float* src = panels.data();
  parallel_for(n, [&](int64_t i) {
    const int64_t r = r0 + i, q = r / kPanelWidth, j = r % kPanelWidth;
    const float* panel = src + q * cols * kPanelWidth;
    for (int64_t k = 0; k < cols; ++k) out[i * cols + k] = panel[k * kPanelWidth + j];
  });
}

namespace {

// dst[kc][32] = the ncols leading floats of kc rows of src, ld floats apart (zero padded).
void copy_slice(const float* src, int64_t ld, int64_t kc, int64_t ncols, float* dst) {
#if defined(__AVX512F__)
  const __mmask16 k0 = tail_mask16(ncols), k1 = tail_mask16(ncols - 16);
#endif
  for (int64_t r = 0; r < kc; ++r) {
    const float* row = src + r * ld;
    float* out = dst + r * kPanelWidth;
#if defined(__AVX512F__)
    _mm512_storeu_ps(out, _mm512_maskz_loadu_ps(k0, row));
    _mm512_storeu_ps(out + 16, _mm512_maskz_loadu_ps(k1, row + 16));
#else
    for (int64_t j = 0; j < kPanelWidth; ++j) out[j] = j < ncols ? row[j] : 0.0f;
#endif
  }
}

// y[M, N] (+)= x[M, K] B[K, N] with B's column panels read from `src`; x stored [M, K], or
// [K, M] when x_transposed. stream_output: y is not read again soon (a weight gradient), so
// where it is written in one pass (one K block, not accumulating) it bypasses the caches.
void panel_product(const float* x, int64_t M, int64_t ldx, bool x_transposed, const PanelSource& src, int64_t N,
                   int64_t K, float* y, int64_t ldy, bool accumulate, OutputWalk walk = OutputWalk::automatic,
                   bool stream_output = false) {
  const int64_t P = (N + kPanelWidth - 1) / kPanelWidth, depth = src.depth;
  const int threads = omp_in_parallel() ? 1 : int(std::min<int64_t>(max_threads(), P));
  // Panels go out in groups, a few per thread, first come first served: a thread slowed
  // by a neighbour on its core takes fewer groups instead of holding the others at a
  // barrier. A group walks K in blocks and its panels inside each block, so each panel
  // slice is read once and the output tiles take K / depth passes.
  const int64_t group = std::clamp<int64_t>(P / (4 * threads), 1, 16);
  const int64_t groups = (P + group - 1) / group;
  const int64_t blocks = (K + depth - 1) / depth;
  const bool streaming = stream_output && blocks == 1 && !accumulate;
  // The store of a tile's first K block (later blocks add to it). A streamed tile is not
  // prefetched: reading it is what the streaming saves.
  const TileStore first_store = accumulate ? TileStore::add : streaming ? TileStore::stream : TileStore::overwrite;
  const bool rows_outer =
      blocks == 1 && (walk == OutputWalk::row_tiles ||
                      (walk == OutputWalk::automatic && rows_outer_suits(K * N * int64_t(sizeof(float)))));
  // Rows in equal chunks (256 rows run as one chunk, not 240 + 16). Each chunk of x is
  // packed once, all of K, tile by tile in every block, shared by the threads. Kept across
  // calls: a fresh buffer this size would be mmapped and page-faulted on every product.
  const int64_t chunks = (M + kRowsPerChunk - 1) / kRowsPerChunk;
  thread_local AlignedVector<float> packed_x;
  packed_x.resize(std::max(packed_x.size(), size_t(std::min(M, kRowsPerChunk) * K)));
  float* const packed = packed_x.data();
  for (int64_t chunk = 0, m0 = 0; chunk < chunks; ++chunk) {
    const int64_t mc = M * (chunk + 1) / chunks - m0;
    const RowTiles tiles(mc);
#pragma omp parallel num_threads(threads)
    {
      thread_local AlignedVector<float> slice_copy;
      if (src.copy) slice_copy.resize(size_t(depth * kPanelWidth));
      // Slice (p, k0) of kc rows as the tiles read it, and its row stride: in place, or
      // copied into slice_copy where the source's rows alias in the cache.
      auto slice_for_tiles = [&](int64_t p, int64_t k0, int64_t kc, int64_t ncols) -> std::pair<const float*, int64_t> {
        if (!src.copy) return {src.slice(p, k0), src.row_stride};
        copy_slice(src.slice(p, k0), src.row_stride, kc, ncols, slice_copy.data());
        return {slice_copy.data(), kPanelWidth};
      };
#pragma omp for schedule(static)
      for (int64_t bt = 0; bt < blocks * tiles.count; ++bt) {
        const int64_t k0 = bt / tiles.count * depth;
        pack_rows(x, ldx, x_transposed, m0, k0, std::min(depth, K - k0), tiles, bt % tiles.count, packed + mc * k0);
      }
      if (rows_outer) {
        // Every slice of B stays in L2 for the whole product: walk the output by row tiles,
        // each across all panels, so C streams row after row (the weight gradients: a few
        // tokens deep, tens of MB of output).
#pragma omp for schedule(dynamic, 1)
        for (int64_t tile = 0; tile < tiles.count; ++tile) {
          const int64_t r0 = tiles.start(tile), mr = tiles.size(tile);
          float* c = y + (m0 + r0) * ldy;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t ncols = std::min(kPanelWidth, N - p * kPanelWidth);
            const auto [b, ldb] = slice_for_tiles(p, 0, K, ncols);
            TilePrefetch pf;
            if (p + 1 < P && !streaming) {
              pf.c_next = c + (p + 1) * kPanelWidth;
              pf.c_rows = mr;
            }
            kTiles[size_t(mr - 1)](K, packed + r0 * K, b, ldb, pf, c + p * kPanelWidth, ldy, ncols, first_store);
          }
          if (streaming) store_fence();
        }
      } else {
#pragma omp for schedule(dynamic, 1)
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t q0 = g * group, q1 = std::min(P, q0 + group);
          for (int64_t k0 = 0; k0 < K; k0 += depth) {
            const int64_t kc = std::min(depth, K - k0);
            const TileStore store = k0 > 0 ? TileStore::add : first_store;
            const float* xk = packed + mc * k0;
            for (int64_t p = q0; p < q1; ++p) {
              const int64_t ncols = std::min(kPanelWidth, N - p * kPanelWidth);
              const auto [b, ldb] = slice_for_tiles(p, k0, kc, ncols);
              // The row tiles share the prefetch of the slice the group needs kAhead slices
              // from now (in its order: panels within a K block, then the next block).
              const int64_t span = q1 - q0, ahead = (k0 / depth) * span + (p - q0) + kAhead;
              const int64_t ak0 = ahead / span * depth, ap = q0 + ahead % span;
              const int64_t next_rows = ak0 < K ? std::min(depth, K - ak0) : 0;
              const int64_t share = (next_rows + tiles.count - 1) / tiles.count;
              const bool last_panel = p + 1 == q1;
              for (int64_t tile = 0; tile < tiles.count; ++tile) {
                const int64_t r0 = tiles.start(tile), mr = tiles.size(tile);
                TilePrefetch pf;
                if (next_rows > 0) {
                  pf.slice = src.slice(ap, ak0) + tile * share * src.row_stride;
                  pf.rows = std::max<int64_t>(0, std::min(share, next_rows - tile * share));
                  pf.stride = src.row_stride;
                }
                if (!streaming && tile + 1 < tiles.count) {
                  pf.c_next = y + (m0 + tiles.start(tile + 1)) * ldy + p * kPanelWidth;
                  pf.c_rows = tiles.size(tile + 1);
                } else if (!streaming && !last_panel) {
                  pf.c_next = y + m0 * ldy + (p + 1) * kPanelWidth;
                  pf.c_rows = tiles.size(0);
                }
                kTiles[size_t(mr - 1)](kc, xk + r0 * kc, b, ldb, pf, y + (m0 + r0) * ldy + p * kPanelWidth,
                                       ldy, ncols, store);
              }
            }
          }
          if (streaming) store_fence();
        }
      }
    }
    m0 += mc;
  }
}

}  // namespace

void panel_linear(const float* x, int64_t M, int64_t ldx, const PanelMatrix& W, float* y, int64_t ldy,
                  bool accumulate) {
  const int64_t N = W.rows, K = W.cols;
  if (M == 0 || N == 0) return;
  MOEPP_CHECK(M > 0 && ldx >= K && ldy >= N, "panel_linear: M ", M, ", strides ", ldx, ", ", ldy,
              " do not fit the matrix shape [", N, ", ", K, "]");
  panel_product(x, M, ldx, false, PanelSource{W.panels.data(), K * kPanelWidth, kPanelWidth}, N, K, y, ldy,
                accumulate);
}

namespace {

// Whether a panel slice of `rows` rows of two 64-byte lines, ldb floats apart, spreads
// over enough sets of the L2 to stay there.
bool slice_fits_l2(int64_t ldb, int64_t rows) {
  const int64_t bytes = ldb * int64_t(sizeof(float));
  if (bytes % 64) return true;  // rows start at varying offsets within lines: no pile-up
  const int64_t l2_sets = l2_cache().sets();
  const int64_t sets = l2_sets / std::gcd(bytes / 64, l2_sets);
  return sets * l2_cache().ways >= 2 * rows;
}

}  // namespace

bool panel_matmul_suits(int64_t ldb) { return slice_fits_l2(ldb, kRowMajorDepth); }

void panel_matmul(const float* x, int64_t M, int64_t ldx, const float* B, int64_t K, int64_t N, int64_t ldb,
                  float* y, int64_t ldy, bool accumulate) {
  if (M == 0 || N == 0) return;
  MOEPP_CHECK(M > 0 && K > 0 && ldx >= K && ldb >= N && ldy >= N, "panel_matmul: M ", M, ", K ", K, ", N ", N,
              ", strides ", ldx, ", ", ldb, ", ", ldy, " do not fit");
  panel_product(x, M, ldx, false, row_major_source(B, ldb, !panel_matmul_suits(ldb)), N, K, y, ldy, accumulate);
}

bool panel_matmul_tn_suits(int64_t K) { return K <= kTnMaxDepth; }

void panel_matmul_tn(const float* a, int64_t lda, int64_t M, const float* B, int64_t K, int64_t N, int64_t ldb,
                     float* y, int64_t ldy, bool accumulate, OutputWalk walk) {
  if (M == 0 || N == 0) return;
  MOEPP_CHECK(M > 0 && K > 0 && lda >= M && ldb >= N && ldy >= N, "panel_matmul_tn: M ", M, ", K ", K, ", N ", N,
              ", strides ", lda, ", ", ldb, ", ", ldy, " do not fit");
  // K is an expert's token count here, often below one pass: the slices are that shallow.
  const PanelSource src = row_major_source(B, ldb, !slice_fits_l2(ldb, std::min(K, kRowMajorDepth)));
  // Each thread takes whole bands of output rows (at least two bands per thread, none over
  // a chunk), rather than all threads sharing each chunk's panels. A band is then one
  // thread's region of the gradient, walked without a barrier per chunk: with the shared
  // walk, a 512-row chunk of dUp at 52 tokens is ~0.3 ms of work split into 8 panel groups,
  // and every chunk ended waiting for the slower thread.
  const int threads = omp_in_parallel() ? 1 : max_threads();
  if (threads > 1 && M >= 2 * threads * kMaxRowsPerTile) {
    const int64_t bands = std::max<int64_t>(2 * threads, (M + kRowsPerChunk - 1) / kRowsPerChunk);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t band = 0; band < bands; ++band) {
      const int64_t m0 = M * band / bands, m1 = M * (band + 1) / bands;
      panel_product(a + m0, m1 - m0, lda, true, src, N, K, y + m0 * ldy, ldy, accumulate, walk, true);
    }
    return;
  }
  panel_product(a, M, lda, true, src, N, K, y, ldy, accumulate, walk, true);
}

}  // namespace moepp
