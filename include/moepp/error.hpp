// moepp::Error: the one exception type of moepp, public. The engine throws it internally
// (src/core/error.h includes this header, so there is exactly one definition in any program
// that links moepp), and the C++ API (moepp.hpp) throws it with the C API's message.
#pragma once
#include <stdexcept>
#include <string>

namespace moepp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace moepp
