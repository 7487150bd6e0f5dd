// Compact weight matrices for inference: a [rows, cols] matrix kept as f32, bf16, q8_0 or
// q4, and the one product inference needs from it, y = x W^T with x in f32.
//
// q8_0 (docs/quantization.md): each row is cut into blocks of 32 columns; a block stores
// 32 int8 values q and one f16 scale d (max|w| / 127, rounded up to an f16 value), and
// stands for w ~ d * q; 8.5 bits a weight. In memory (and in moepp's safetensors) the int8
// values of all rows are one [rows, cols] array and the scales one [rows, cols / 32] array,
// so a row's blocks are contiguous and a file can be used in place. cols must be a
// multiple of 32.
//
// q4 (docs/quantization.md, kernels/int8_dot.h): blocks of 32 columns with one f16 scale
// d = -(the weight of largest magnitude) / 8 and 4-bit values q in [-8, 7], w ~ d * q;
// 4.5 bits a weight. Also cols a multiple of 32.
//
// packed_linear reads each weight once per call. f32 weights are kept as column panels
// (kernels/gemm_panels.h) and multiplied by the panel kernel at every row count. For bf16
// and q8_0, a few rows of x (decode) are multiplied against weight blocks converted in
// registers; many rows (prefill) round x to bf16 and run the bf16 GEMM (AMX or AVX-512
// BF16 through oneDNN) on the bf16 weights as stored or on q8_0 widened to bf16 a band at
// a time; where the CPU lacks bf16 they widen row panels of W to f32 and use the f32 GEMM.
// q4 products of a few rows quantize x to int8 and use integer dot products
// (kernels/int8_dot.h); many rows take the bf16 GEMM as q8_0 does. On a CPU with AMX-INT8,
// q8_0 and q4 products of more than a few rows keep x in int8 too and run on AMX tiles
// (kernels/amx_int8.h): every row count then has the same arithmetic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/uninit_vector.h"
#include "core/weight_buffer.h"
#include "kernels/gemm_panels.h"
#include "kernels/int8_tiles.h"

namespace moepp {

enum class WeightType { f32, bf16, q8_0, q4 };

// Every weight type, the one list the CLI's --dtype choices and the parser read.
inline constexpr WeightType kWeightTypes[] = {WeightType::f32, WeightType::bf16, WeightType::q8_0, WeightType::q4};

const char* weight_type_name(WeightType t);
std::vector<std::string> weight_type_names();  // in kWeightTypes order
WeightType parse_weight_type(const std::string& name);  // one of weight_type_names(); throws otherwise

constexpr int64_t kQ8Block = 32;
constexpr int64_t kQ4Block = 32;

// Whether a matrix with rows of `cols` can be stored as `type` (q8_0 and q4 need whole
// blocks); a model keeps the others f32.
bool weight_type_fits(WeightType type, int64_t cols);

struct PackedMatrix {
  WeightType type = WeightType::f32;
  int64_t rows = 0, cols = 0;
  PanelMatrix f32;                // f32: column panels
  WeightBuffer<uint16_t> bf16;    // bf16: [rows, cols] raw bits
  WeightBuffer<int8_t> q;         // q8_0: [rows, cols]
  HugePageVector<uint16_t> scales;  // q8_0, q4: [rows, cols / 32], f16 bits (scale(i) as f32)
  WeightBuffer<uint8_t> nibbles;  // q4: [rows, cols / 2], two values a byte (kernels/int8_dot.h)
  // (bf16, q and nibbles may view a mapped file loaded in place: io/weight_source.h.)

  // Packs a row-major f32 matrix; throws if q8_0 or q4 is asked for with cols % 32 != 0.
  static PackedMatrix pack(const float* w, int64_t rows, int64_t cols, WeightType type);
  // Writes rows [r0, r0 + n) as f32 into out [n, cols].
  void unpack_rows(int64_t r0, int64_t n, float* out) const;
  // Writes rows [r0, r0 + n) of a q8_0 or q4 matrix as bf16(scale * value) (raw bits) into out [n, cols].
  void unpack_rows_bf16(int64_t r0, int64_t n, uint16_t* out) const;
  // Bytes of weight data (what a product reads).
  size_t bytes() const;
  // Scale i of a q8_0 or q4 matrix (row r's block b is i = r * cols / 32 + b).
  float scale(int64_t i) const { return f16_to_f32_fast(scales[size_t(i)]); }
};

// y[m, j] (+)= sum_k x[m, k] * W[j, k] for m < M, j < W.rows; x: [M, W.cols] with row
// stride ldx, y: [M, W.rows] with row stride ldy. accumulate=false overwrites y.
void packed_linear(const float* x, int64_t M, int64_t ldx, const PackedMatrix& W, float* y, int64_t ldy,
                   bool accumulate = false);

// Whether packed_linear with M rows of x rounds x and W to bf16 and runs the bf16 GEMM
// (f32 accumulation): bf16, q8_0 and q4 weights, more than 8 rows, a CPU with AVX-512 BF16 or
// AMX under oneDNN, and for q8_0 and q4 no int8 product (below). That product is then exact
// for bf16(x) and bf16(W) up to the f32 sums.
bool packed_linear_uses_bf16(const PackedMatrix& W, int64_t M);
bool packed_products_use_bf16(WeightType type, int64_t M);  // the same, by weight type
// Whether it quantizes x to int8 (kernels/int8_dot.h): up to 8 rows, q4 weights, and q8_0
// weights where the CPU has AVX-512 VNNI; up to 24 rows (in blocks of 8) of either where the
// vector int8 kernel runs; any number of rows of either on AMX-INT8, and beyond 24 rows with
// AVX-512 VNNI (the int8 GEMM, kernels/int8_gemm.h).
bool packed_products_use_int8(WeightType type, int64_t M);
// Whether those int8 products run on AMX tiles (kernels/amx_int8.h): q8_0 from 5 rows and q4
// from 7 (below, the few-row kernel is as fast), a CPU with AMX-INT8.
bool packed_products_use_amx(WeightType type, int64_t M);

// Whether packed_linear quantizes M rows of x into tiles (kernels/int8_tiles.h) and runs
// packed_linear_tiles: q8_0 and q4 on AMX-INT8, or beyond 24 rows on the int8 GEMM.
bool packed_linear_uses_tiles(const PackedMatrix& W, int64_t M);
// That side of packed_linear, for callers that quantize x into tiles themselves (an FFN
// expert's hidden rows, quantized as SwiGLU makes them); needs packed_linear_uses_tiles(W, x.rows).
void packed_linear_tiles(const TileRows& x, const PackedMatrix& W, float* y, int64_t ldy, bool accumulate = false);

// out[i] = x[i] rounded to bf16 (nearest even; raw bits), for i < n.
void round_to_bf16(const float* x, int64_t n, uint16_t* out);

// The bf16 GEMM's side of packed_linear, for callers that keep x in bf16 themselves (an FFN
// expert's hidden rows, rounded as SwiGLU writes them). It takes x's M rows as
// bf16_gemm_rows(M): from 17 rows, M padded to whole AMX tiles of 16 rows.
int64_t bf16_gemm_rows(int64_t M);
// y[m, :] = xb[m, :] W^T (+ beta y) for m < rows, xb rounded to bf16 with row stride W.cols;
// rows as bf16_gemm_rows gives them (y has that many rows). W bf16 as stored, q8_0/q4
// rounded to bf16 first (whole up to 8 M weights, in bands beyond). Needs gemm_bf16_available().
void packed_linear_bf16_rows(const uint16_t* xb, int64_t rows, const PackedMatrix& W, float beta, float* y,
                             int64_t ldy);
// x's M rows (stride ldx, K columns) rounded to bf16 into `buffer`, followed by zero rows up
// to bf16_gemm_rows(M); returns the buffer's data.
uint16_t* round_rows_to_bf16_padded(const float* x, int64_t M, int64_t ldx, int64_t K,
                                    UninitVector<uint16_t>& buffer);
// y[m, :] = (or +=) xb[m, :] W^T for m < M, xb holding bf16_gemm_rows(M) rows as
// round_rows_to_bf16_padded leaves them: the padded rows of the product land in this
// thread's scratch and only the M real ones are written to y.
void packed_linear_bf16_padded(const uint16_t* xb, int64_t M, const PackedMatrix& W, float* y, int64_t ldy,
                               bool accumulate);

}  // namespace moepp
