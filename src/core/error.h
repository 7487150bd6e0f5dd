// moepp::Error: the one exception type. It carries a message that names what was wrong
// (file, field, value); MOEPP_CHECK builds one with the failing condition's context. The
// class itself is public (include/moepp/error.hpp) so that the engine and programs using
// the C++ API share one definition.
#pragma once
#include <sstream>
#include <string>

#include "moepp/error.hpp"

namespace moepp {

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws moepp::Error with the message parts streamed together.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace moepp

#define MOEPP_CHECK(cond, ...)                  \
  do {                                          \
    if (!(cond)) ::moepp::fail(__VA_ARGS__);    \
  } while (0)
