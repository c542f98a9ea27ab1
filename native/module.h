// NativeModule: a TorchScript module. Methods run on the executor thread (executor.h), sync
// or async; JS arguments are converted by the method's schema before queuing.
#pragma once

#include <optional>

#include "common.h"

namespace td {

class ModuleWrap : public Napi::ObjectWrap<ModuleWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Value Wrap(Napi::Env env, torch::jit::Module module);

  explicit ModuleWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Run(const Napi::CallbackInfo& info);       // [sync]  run(method, args[], kwargs?)
  Napi::Value RunAsync(const Napi::CallbackInfo& info);  // [async] runAsync(method, args[], kwargs?) -> Promise
  // [async] runConcurrentlyAsync(method, argLists[][]) -> Promise<results[]>: one call per list, all at once.
  Napi::Value RunConcurrentlyAsync(const Napi::CallbackInfo& info);
  Napi::Value MethodNames(const Napi::CallbackInfo& info);
  Napi::Value MethodSchema(const Napi::CallbackInfo& info);
  Napi::Value NamedParameters(const Napi::CallbackInfo& info);
  Napi::Value NamedBuffers(const Napi::CallbackInfo& info);
  Napi::Value NamedModules(const Napi::CallbackInfo& info);
  Napi::Value Train(const Napi::CallbackInfo& info);
  Napi::Value IsTraining(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value SaveToBuffer(const Napi::CallbackInfo& info);
  Napi::Value SetAttribute(const Napi::CallbackInfo& info);  // setAttribute(dottedName, tensor, kind: "parameter" | "buffer")
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value Attribute(const Napi::CallbackInfo& info);
  // dispose(): drops this handle's reference to the module, so its parameters are freed now
  // (unless tensors handed out still hold them) rather than when the GC collects the handle.
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);
  torch::jit::Module& live(Napi::Env env);  // throws "used after dispose()"

  std::vector<c10::IValue> convertArguments(Napi::Env env, const std::string& method, const Napi::Value& positional,
                                            const Napi::Value& keywords, std::unordered_map<std::string, c10::IValue>& kwargs);

  std::optional<torch::jit::Module> module_;
};

// loadModule(pathOrBuffer, device?: string) -> NativeModule
Napi::Value LoadModule(const Napi::CallbackInfo& info);

}  // namespace td
