// moepp::Error: the one exception type. It carries a message that names what was wrong
// (file, field, value); MOEPP_CHECK builds one with the failing condition's context.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace moepp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

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
