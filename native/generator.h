// NativeGenerator: a libtorch random generator (CPU or CUDA), so seeded draws match PyTorch.
#pragma once

#include "common.h"

namespace td {

class GeneratorWrap : public Napi::ObjectWrap<GeneratorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static at::Generator From(Napi::Env env, const Napi::Value& value, const std::string& what);
  // The generator `value` wraps, or nullptr where it is no Generator.
  static const at::Generator* Find(const Napi::Value& value);

  // new NativeGenerator(seed?: number | bigint, device?: string); `"default"` as device wraps the global CPU generator.
  explicit GeneratorWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value ManualSeed(const Napi::CallbackInfo& info);
  Napi::Value Seed(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value SetState(const Napi::CallbackInfo& info);

  at::Generator generator_;
};

// manualSeed(seed): seeds the global CPU generator and every CUDA device's, as torch.manual_seed does.
Napi::Value ManualSeedAll(const Napi::CallbackInfo& info);

}  // namespace td
