// Per-environment state: the JS constructors C++ uses to hand objects back to JS, and the
// channel through which the executor thread hands results back.
#pragma once

#include <napi.h>

#include <memory>

#include "executor.h"
#include "tensor.h"

namespace td {

struct AddonData {
  std::unique_ptr<TensorTable> tensors;    // the tensors JS holds (tensor.h)
  Napi::FunctionReference tensorFactory;   // handle -> JS Tensor, registered by lib/tensor.ts
  Napi::Reference<Napi::Symbol> tensorHandleKey;
  Napi::FunctionReference moduleClass;
  Napi::FunctionReference generatorClass;
  std::unique_ptr<ExecutorChannel> executor;  // async libtorch calls (executor.h)
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace td
