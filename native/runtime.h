// Process-wide settings and facts: threads, grad mode, CUDA availability, build info.
#pragma once

#include "common.h"

namespace td {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value SetGradEnabled(const Napi::CallbackInfo& info);
Napi::Value IsGradEnabled(const Napi::CallbackInfo& info);
Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info);
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info);
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info);
Napi::Value BuildInfo(Napi::Env env);
// setTensorClass(cls): the TS Tensor subclass that C++ instantiates for every tensor it returns.
Napi::Value SetTensorClass(const Napi::CallbackInfo& info);
Napi::Value SetModuleClass(const Napi::CallbackInfo& info);

}  // namespace td
