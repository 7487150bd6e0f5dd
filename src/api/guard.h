// The C API's boundary: every moepp_* function runs its body through guarded(), which
// turns any exception into a moepp_status and the calling thread's last error message, so
// that no exception crosses into C. fail() sets a message for an error found here.
#pragma once
#include <string>

#include "core/parallel.h"
#include "moepp/moepp.h"

namespace moepp::api {

// Records msg as the calling thread's last error and returns status. Never throws.
moepp_status fail(moepp_status status, const std::string& msg) noexcept;
// The message moepp_last_error() returns.
const char* last_error() noexcept;

// What moepp_* functions throw for a caller's mistake (a NULL pointer, a bad size):
// MOEPP_INVALID_ARGUMENT, where the engine's own errors give MOEPP_ERROR.
struct InvalidArgument {
  std::string message;
};
// A buffer smaller than the result: MOEPP_BUFFER_TOO_SMALL (the size is already written).
struct BufferTooSmall {
  std::string message;
};

moepp_status status_of_current_exception(const char* function) noexcept;

template <typename F>
moepp_status guarded(const char* function, F&& body) noexcept {
  try {
    body();
    return MOEPP_OK;
  } catch (...) {
    return status_of_current_exception(function);
  }
}

// guarded() for the functions that compute (load, logits, generate, train): the calling
// thread's idle OpenMP workers are ended when it returns (core/parallel.h). A program that
// loads or scores on one thread and generates on another (the Python package generates in
// a worker thread) otherwise leaves the runtime more threads than CPUs, and then every
// parallel region of the working thread waits for a sleeping worker to be woken.
template <typename F>
moepp_status guarded_compute(const char* function, F&& body) noexcept {
  const moepp_status status = guarded(function, static_cast<F&&>(body));
  release_idle_threads();
  return status;
}

// Throws InvalidArgument naming the function and the argument when p is null.
void require(const void* p, const char* function, const char* argument);

}  // namespace moepp::api
