#include "serialize.h"

#include <torch/csrc/jit/serialization/pickle.h>

#include "convert.h"

namespace td {

Napi::Value SaveValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto value = toIValueUntyped(env, info[0], "saveValue");
  auto bytes = guarded(env, "saveValue", [&] { return torch::jit::pickle_save(value); });
  return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
}

Napi::Value LoadValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) throwTypeError(env, "loadValue: expected a Buffer but received " + describeJsValue(info.Length() ? info[0] : env.Undefined()));
  auto buffer = info[0].As<Napi::Buffer<char>>();
  std::vector<char> bytes(buffer.Data(), buffer.Data() + buffer.Length());
  auto value = guarded(env, "loadValue", [&] {
    try {
      return torch::jit::pickle_load(bytes);
    } catch (const c10::Error& e) {
      throw std::runtime_error(std::string("not a saved value or truncated: ") + e.what_without_backtrace());
    }
  });
  // The value is ours alone: if it cannot be converted (nested too deep), free it level by level.
  try {
    return fromIValue(env, value);
  } catch (...) {
    releaseFlat(std::move(value));
    throw;
  }
}

}  // namespace td
