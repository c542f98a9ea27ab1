// Process-wide settings and facts: threads, grad mode, CUDA availability, build info.
#pragma once

#include "common.h"

namespace td {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value SetGradEnabled(const Napi::CallbackInfo& info);
Napi::Value IsGradEnabled(const Napi::CallbackInfo& info);
// TorchScript's graph executor optimizes a method after its first calls (profiling, fusion,
// symbolic autodiff). That makes the first calls slow and gradients differ in the last bit
// between a module's first and later calls, so a resumed training run would not equal an
// uninterrupted one. Forward values did not change (tiny SD and the built-in U-Net, bit for bit),
// and the optimized call was 6-8% faster on tiny SD. So by default ("inference") only calls made
// without gradient recording are optimized; setGraphOptimization(true / false) forces it for all.
// The switch is thread-local in libtorch: each module call applies graphOptimizationFor() on the
// executor thread.
bool graphOptimizationFor(bool gradEnabled);
Napi::Value SetGraphOptimization(const Napi::CallbackInfo& info);
Napi::Value IsGraphOptimizationEnabled(const Napi::CallbackInfo& info);
Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info);
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info);
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info);
Napi::Value BuildInfo(Napi::Env env);
// setModuleClass(cls): the TS Module subclass that C++ instantiates for every module it returns.
Napi::Value SetModuleClass(const Napi::CallbackInfo& info);

}  // namespace td
