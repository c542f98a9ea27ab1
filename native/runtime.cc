#include "runtime.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>

#include "addon_data.h"
#include "executor.h"

namespace td {

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // More threads than this only thrash (and a million of them hang the process while OpenMP spawns them).
  constexpr double kMaxThreads = 1024;
  const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  if (!(n >= 1 && n <= kMaxThreads) || n != std::trunc(n)) {
    throwTypeError(env, "setNumThreads: expected an integer from 1 to 1024 but received " + describeJsValue(info[0]));
  }
  setComputeThreads(static_cast<int>(n));
  return env.Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), computeThreads());
}

Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) throwTypeError(info.Env(), "setGradEnabled: expected a boolean");
  at::GradMode::set_enabled(info[0].As<Napi::Boolean>().Value());
  return info.Env().Undefined();
}

Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled());
}

namespace {
enum GraphOptimization : int { kGraphOptimizationOff, kGraphOptimizationOn, kGraphOptimizationInference };
std::atomic<int> graphOptimization{kGraphOptimizationInference};
}  // namespace

bool graphOptimizationFor(bool gradEnabled) {
  const int mode = graphOptimization.load();
  return mode == kGraphOptimizationOn || (mode == kGraphOptimizationInference && !gradEnabled);
}

Napi::Value SetGraphOptimization(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && info[0].IsBoolean()) {
    graphOptimization.store(info[0].As<Napi::Boolean>().Value() ? kGraphOptimizationOn : kGraphOptimizationOff);
  } else if (info.Length() > 0 && info[0].IsString() && info[0].As<Napi::String>().Utf8Value() == "inference") {
    graphOptimization.store(kGraphOptimizationInference);
  } else {
    throwTypeError(env, "setGraphOptimization: expected true, false or \"inference\" but received " + describeJsValue(info[0]));
  }
  return env.Undefined();
}

Napi::Value IsGraphOptimizationEnabled(const Napi::CallbackInfo& info) {
  const int mode = graphOptimization.load();
  if (mode == kGraphOptimizationInference) return Napi::String::New(info.Env(), "inference");
  return Napi::Boolean::New(info.Env(), mode == kGraphOptimizationOn);
}

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(torch::cuda::device_count()));
}

Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (torch::cuda::is_available()) guarded(env, "cuda.synchronize", [] { torch::cuda::synchronize(); });
  return env.Undefined();
}

Napi::Value BuildInfo(Napi::Env env) {
  auto result = Napi::Object::New(env);
  result.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
#ifdef TD_WITH_CUDA
  result.Set("cuda", Napi::Boolean::New(env, true));
#else
  result.Set("cuda", Napi::Boolean::New(env, false));
#endif
#ifdef TD_LIBTORCH_DIR
  result.Set("libtorchDir", Napi::String::New(env, TD_LIBTORCH_DIR));
#endif
  return result;
}

Napi::Value SetModuleClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) throwTypeError(info.Env(), "setModuleClass: expected a class");
  addonData(info.Env()).moduleClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace td
