// Stored tensor elements (little-endian, any alignment: inside a mapped file) converted to
// the type moepp computes in. One typed loop per stored dtype (the compiler vectorises the
// widening; a switch per element does not), the elements split over all threads: a 7B
// model's loaders widen billions of them. Used by every reader that converts what it maps.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace moepp {

template <typename T>  // float, double, int64_t, int32_t
void convert_elements(const uint8_t* src, DType dtype, int64_t n, T* dst);

}  // namespace moepp
