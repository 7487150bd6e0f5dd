// Cross-entropy over logits [rows, V] with integer targets; a target < 0 is ignored.
// The loss is the mean over counted rows. The fused form writes the logit gradient in the
// same pass, so the softmax over a large vocabulary is computed once.
#pragma once
#include <cstdint>

namespace moepp {

template <typename T>
double cross_entropy_forward(const T* logits, const int32_t* targets, int64_t rows, int64_t V);

// Returns the mean loss and sets dlogits = dloss * d(mean loss)/dlogits (overwritten, not
// accumulated: the logits' gradient starts here).
template <typename T>
double cross_entropy_fused(const T* logits, const int32_t* targets, int64_t rows, int64_t V,
                           T dloss, T* dlogits);

// The same loss, with the gradient rounded to bf16 (nearest even; raw bits): the values
// round_to_bf16 gives of cross_entropy_fused's dlogits, for bf16 training, whose products
// read only the rounded gradient (half the bytes written, and no f32 copy to round).
double cross_entropy_fused_bf16(const float* logits, const int32_t* targets, int64_t rows, int64_t V, float dloss,
                                uint16_t* dlogits);

}  // namespace moepp
