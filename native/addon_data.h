// Per-environment state: the JS constructors C++ uses to hand objects back to JS, and the
// channel through which the executor thread hands results back.
#pragma once

#include <napi.h>

#include <memory>

#include "executor.h"

namespace td {

struct AddonData {
  Napi::FunctionReference tensorClass;     // the TS subclass of NativeTensor once registered
  Napi::FunctionReference nativeTensorClass;
  Napi::FunctionReference moduleClass;
  Napi::FunctionReference generatorClass;
  std::unique_ptr<ExecutorChannel> executor;  // async libtorch calls (executor.h)
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace td
