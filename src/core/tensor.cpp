#include "core/tensor.h"

#include <sstream>

namespace moepp {

std::string Shape::str() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < dims.size(); ++i) os << (i ? ", " : "") << dims[i];
  os << "]";
  return os.str();
}

void* aligned_zeroed(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("out of memory allocating ", bytes, " bytes");
  std::memset(p, 0, rounded);
  return p;
}

void Arena::reserve(size_t bytes) {
  block_.reset(bytes ? static_cast<char*>(aligned_zeroed(bytes)) : nullptr);
  capacity_ = bytes;
  used_ = 0;
}

void* Arena::take_bytes(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  MOEPP_CHECK(used_ + rounded <= capacity_, "arena exhausted: asked for ", bytes,
              " bytes with ", capacity_ - used_, " of ", capacity_, " left");
  void* p = block_.get() + used_;
  used_ += rounded;
  return p;
}

}  // namespace moepp
