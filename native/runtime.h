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
// uninterrupted one. The addon turns it off at load (like torch.jit.optimized_execution(False));
// setGraphOptimization(true) turns it back on. The switch is thread-local in libtorch: async
// module calls carry the caller's setting onto the worker thread.
void DisableGraphOptimizationByDefault();
Napi::Value SetGraphOptimization(const Napi::CallbackInfo& info);
Napi::Value IsGraphOptimizationEnabled(const Napi::CallbackInfo& info);
Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info);
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info);
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info);
Napi::Value BuildInfo(Napi::Env env);
// setTensorClass(cls): the TS Tensor subclass that C++ instantiates for every tensor it returns.
Napi::Value SetTensorClass(const Napi::CallbackInfo& info);
Napi::Value SetModuleClass(const Napi::CallbackInfo& info);

}  // namespace td
