#include "generator.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <cmath>
#include <mutex>

#include "checks.h"
#include "tensor.h"

namespace td {

namespace {

constexpr napi_type_tag kGeneratorTag = {0x3c5be1a07d9f4426ULL, 0x8e21b6d4c0a97f13ULL};

uint64_t seedFromJs(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (value.IsBigInt()) {
    bool lossless = false;
    uint64_t seed = value.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throwTypeError(env, what + ": expected a seed in [0, 2^64) but received a bigint out of range");
    return seed;
  }
  const double d = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
  if (!value.IsNumber() || !(d >= 0) || d >= 18446744073709551616.0 || d != std::trunc(d)) {
    throwTypeError(env, what + ": expected a non-negative integer seed but received " + describeJsValue(value));
  }
  return static_cast<uint64_t>(d);
}

}  // namespace

Napi::Function GeneratorWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeGenerator",
                     {
                         InstanceMethod<&GeneratorWrap::ManualSeed>("manualSeed"),
                         InstanceAccessor<&GeneratorWrap::Seed>("seed"),
                         InstanceAccessor<&GeneratorWrap::Device>("device"),
                         InstanceMethod<&GeneratorWrap::GetState>("getState"),
                         InstanceMethod<&GeneratorWrap::SetState>("setState"),
                     });
}

GeneratorWrap::GeneratorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GeneratorWrap>(info) {
  Napi::Env env = info.Env();
  const std::string device = info[1].IsUndefined() || info[1].IsNull() ? "cpu" : stringArg(env, info[1], "Generator: device");
  const bool isDefault = device == "default";
  const auto d = isDefault ? c10::Device(c10::kCPU) : parseDevice(env, device, "Generator: device");
  guarded(env, "Generator", [&] {
    if (isDefault) {
      generator_ = at::detail::getDefaultCPUGenerator();
    } else if (d.is_cpu()) {
      generator_ = at::detail::createCPUGenerator();
    } else {
      // Through the Context (the registered CUDA hooks), so the CPU build needs no CUDA symbols; the hooks'
      // own getDefaultCUDAGenerator of libtorch 1.x is getDefaultGenerator in 2.x.
      TORCH_CHECK(at::hasCUDA(), "device ", device, " is not available in this build of libtorch");
      TORCH_CHECK(!d.has_index() || d.index() < static_cast<int>(torch::cuda::device_count()), "device ", device, " does not exist");
      generator_ = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, d.has_index() ? d.index() : 0)).clone();
    }
  });
  if (info.Length() > 0 && !info[0].IsUndefined() && !info[0].IsNull()) {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_current_seed(seedFromJs(env, info[0], "Generator"));
  }
  info.This().As<Napi::Object>().TypeTag(&kGeneratorTag);
}

at::Generator GeneratorWrap::From(Napi::Env env, const Napi::Value& value, const std::string& what) {
  const at::Generator* generator = Find(value);
  if (generator == nullptr) throwTypeError(env, what + ": expected a Generator but received " + describeJsValue(value));
  return *generator;
}

const at::Generator* GeneratorWrap::Find(const Napi::Value& value) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kGeneratorTag)) return nullptr;
  return &Unwrap(value.As<Napi::Object>())->generator_;
}

Napi::Value GeneratorWrap::ManualSeed(const Napi::CallbackInfo& info) {
  const uint64_t seed = seedFromJs(info.Env(), info[0], "Generator.manualSeed");
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_current_seed(seed);
  return info.This();
}

Napi::Value GeneratorWrap::Seed(const Napi::CallbackInfo& info) {
  const uint64_t seed = generator_.current_seed();
  if (seed <= 9007199254740991ULL) return Napi::Number::New(info.Env(), static_cast<double>(seed));
  return Napi::BigInt::New(info.Env(), seed);
}

Napi::Value GeneratorWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), generator_.device().str());
}

Napi::Value GeneratorWrap::GetState(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  return tensors::Wrap(info.Env(), generator_.get_state());
}

Napi::Value GeneratorWrap::SetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& state = tensors::From(env, info[0], "Generator.setState");
  guarded(env, "Generator.setState", [&] {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(state);
  });
  return env.Undefined();
}

Napi::Value ManualSeedAll(const Napi::CallbackInfo& info) {
  const uint64_t seed = seedFromJs(info.Env(), info[0], "manualSeed");
  torch::manual_seed(seed);
  return info.Env().Undefined();
}

}  // namespace td
