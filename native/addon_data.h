// Per-environment state: the JS constructors C++ uses to hand objects back to JS.
#pragma once

#include <napi.h>

namespace td {

struct AddonData {
  Napi::FunctionReference tensorClass;     // the TS subclass of NativeTensor once registered
  Napi::FunctionReference nativeTensorClass;
  Napi::FunctionReference moduleClass;
  Napi::FunctionReference generatorClass;
};

inline AddonData& addonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace td
