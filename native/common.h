// Shared includes and the one error path of the addon: every C++ exception that
// reaches a Node-API entry point becomes a JS Error whose message names the op or
// method, without libtorch's C++ backtrace.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <string>
#include <utility>

namespace td {

// Message of a c10::Error without the C++ backtrace libtorch appends. Errors raised inside
// the TorchScript interpreter put the failing operation's own message first, then the
// TorchScript traceback, so the first line says what went wrong.
inline std::string errorMessage(const std::exception& e) {
  auto* c10e = dynamic_cast<const c10::Error*>(&e);
  std::string message = c10e ? c10e->what_without_backtrace() : e.what();
  if (message.find("The following operation failed in the TorchScript interpreter") == std::string::npos) return message;
  const auto cause = message.rfind("\nRuntimeError: ");
  if (cause == std::string::npos) return message;
  std::string first = message.substr(cause + 15);
  while (!first.empty() && (first.back() == '\n' || first.back() == ' ')) first.pop_back();
  return first + "\n" + message.substr(0, cause);
}

// Runs `body`, converting libtorch / std exceptions into a JS Error prefixed by `where`.
// Napi::Error passes through unchanged (it already carries a clear message).
template <class F>
auto guarded(Napi::Env env, const std::string& where, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, where + ": " + errorMessage(e));
  }
}

[[noreturn]] inline void throwError(Napi::Env env, const std::string& message) {
  throw Napi::Error::New(env, message);
}

[[noreturn]] inline void throwTypeError(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, message);
}

// A short description of what a JS value is, for "expected X but received Y" messages.
std::string describeJsValue(const Napi::Value& value);

// "float32" / "int64" / ... from a scalar type; the inverse of dtypeFromName.
const char* dtypeName(c10::ScalarType type);
c10::ScalarType dtypeFromName(Napi::Env env, const std::string& name, const std::string& where);
// { float32: 6, ... }: torch's ScalarType number of each dtype name, for calls that pass it unboxed.
Napi::Object DtypeIds(Napi::Env env);

// "[2, 3] float32 cpu" for error messages.
std::string describeTensor(const at::Tensor& t);

}  // namespace td
