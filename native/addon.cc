// Module init: registration only.
#include "addon_data.h"
#include "cpu_allocator.h"
#include "dispatch.h"
#include "distributed.h"
#include "generator.h"
#include "module.h"
#include "runtime.h"
#include "serialize.h"
#include "tensor.h"

namespace td {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  installCachingCpuAllocator();
  auto* data = new AddonData();
  env.SetInstanceData(data);
  data->executor = makeExecutorChannel(env);
  initComputeThreads();

  tensors::Init(env, exports);
  auto moduleClass = ModuleWrap::Init(env);
  data->moduleClass = Napi::Persistent(moduleClass);
  exports.Set("NativeModule", moduleClass);
  auto generatorClass = GeneratorWrap::Init(env);
  data->generatorClass = Napi::Persistent(generatorClass);
  exports.Set("NativeGenerator", generatorClass);

  exports.Set("tensorFromBuffer", Napi::Function::New<TensorFromBuffer>(env, "tensorFromBuffer"));
  exports.Set("cpuAllocatorStats", Napi::Function::New<CpuAllocatorStats>(env, "cpuAllocatorStats"));
  exports.Set("emptyCpuCache", Napi::Function::New<EmptyCpuCache>(env, "emptyCpuCache"));
  exports.Set("resolveOp", Napi::Function::New<ResolveOp>(env, "resolveOp"));
  exports.Set("callOp", Napi::Function::New<CallOp>(env, "callOp"));
  exports.Set("callTensorOp", Napi::Function::New<CallTensorOp>(env, "callTensorOp"));
  exports.Set("opReturnsTensor", Napi::Function::New<OpReturnsTensor>(env, "opReturnsTensor"));
  exports.Set("binaryOp", Napi::Function::New<BinaryOp>(env, "binaryOp"));
  exports.Set("binaryScalarOp", Napi::Function::New<BinaryScalarOp>(env, "binaryScalarOp"));
  exports.Set("factoryOp", Napi::Function::New<FactoryOp>(env, "factoryOp"));
  exports.Set("opNames", Napi::Function::New<OpNames>(env, "opNames"));
  exports.Set("opSchema", Napi::Function::New<OpSchema>(env, "opSchema"));
  exports.Set("loadModule", Napi::Function::New<LoadModule>(env, "loadModule"));
  exports.Set("saveValue", Napi::Function::New<SaveValue>(env, "saveValue"));
  exports.Set("loadValue", Napi::Function::New<LoadValue>(env, "loadValue"));
  exports.Set("manualSeed", Napi::Function::New<ManualSeedAll>(env, "manualSeed"));
  exports.Set("setNumThreads", Napi::Function::New<SetNumThreads>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<GetNumThreads>(env, "getNumThreads"));
  exports.Set("setGradEnabled", Napi::Function::New<SetGradEnabled>(env, "setGradEnabled"));
  exports.Set("isGradEnabled", Napi::Function::New<IsGradEnabled>(env, "isGradEnabled"));
  exports.Set("setGraphOptimization", Napi::Function::New<SetGraphOptimization>(env, "setGraphOptimization"));
  exports.Set("isGraphOptimizationEnabled", Napi::Function::New<IsGraphOptimizationEnabled>(env, "isGraphOptimizationEnabled"));
  exports.Set("cudaIsAvailable", Napi::Function::New<CudaIsAvailable>(env, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New<CudaDeviceCount>(env, "cudaDeviceCount"));
  exports.Set("cudaSynchronize", Napi::Function::New<CudaSynchronize>(env, "cudaSynchronize"));
  exports.Set("setModuleClass", Napi::Function::New<SetModuleClass>(env, "setModuleClass"));
  InitDistributed(env, exports);
  exports.Set("buildInfo", BuildInfo(env));
  exports.Set("dtypeIds", DtypeIds(env));
  return exports;
}

}  // namespace td

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return td::Init(env, exports); }

NODE_API_MODULE(torch_diffusion, InitAddon)
