// The C API's error state (guard.h): one message per thread, and the mapping from the
// exceptions the engine throws to moepp_status codes.
#include "api/guard.h"

#include <exception>
#include <new>

#include "core/error.h"

namespace moepp::api {

namespace {
thread_local std::string t_message;
thread_local const char* t_last = "";  // t_message, or a literal when even that failed
}  // namespace

moepp_status fail(moepp_status status, const std::string& msg) noexcept {
  try {
    t_message = msg;
    t_last = t_message.c_str();
  } catch (...) {
    t_last = "moepp: out of memory while recording an error";
  }
  return status;
}

const char* last_error() noexcept { return t_last; }

moepp_status status_of_current_exception(const char* function) noexcept {
  try {
    try {
      throw;
    } catch (const InvalidArgument& e) {
      return fail(MOEPP_INVALID_ARGUMENT, e.message);
    } catch (const BufferTooSmall& e) {
      return fail(MOEPP_BUFFER_TOO_SMALL, e.message);
    } catch (const std::bad_alloc&) {
      return fail(MOEPP_OUT_OF_MEMORY, std::string(function) + ": out of memory");
    } catch (const std::exception& e) {  // moepp::Error, and anything a library below throws
      return fail(MOEPP_ERROR, e.what());
    } catch (...) {
      return fail(MOEPP_ERROR, std::string(function) + ": an unknown failure");
    }
  } catch (...) {  // building the message failed
    t_last = "moepp: out of memory while recording an error";
    return MOEPP_OUT_OF_MEMORY;
  }
}

void require(const void* p, const char* function, const char* argument) {
  if (!p) throw InvalidArgument{std::string(function) + ": " + argument + " is NULL"};
}

}  // namespace moepp::api
