#include "tensor.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "addon_data.h"
#include "checks.h"
#include "executor.h"

namespace td {

namespace {

struct StorageAccount {
  int64_t handles = 0;
  size_t bytes = 0;
  bool cuda = false;
};

std::mutex accountMutex;
// Bytes not yet reported to V8: reporting every tensor costs a V8 call per op, so changes
// are batched and reported once they reach kExternalReportBytes either way.
thread_local int64_t unreportedBytes = 0;
constexpr int64_t kExternalReportBytes = 1 << 20;

void reportExternal(Napi::Env env, int64_t bytes) {
  unreportedBytes += bytes;
  if (unreportedBytes >= kExternalReportBytes || unreportedBytes <= -kExternalReportBytes) {
    Napi::MemoryManagement::AdjustExternalMemory(env, unreportedBytes);
    unreportedBytes = 0;
  }
}
std::unordered_map<const void*, StorageAccount> storages;
int64_t liveHandles = 0;
size_t cpuBytes = 0;
size_t cudaBytes = 0;

// Records a new handle on `t`'s storage; returns the bytes newly kept alive on the CPU (for V8's account).
int64_t accountAdd(const at::Tensor& t, const void*& key) {
  std::lock_guard<std::mutex> lock(accountMutex);
  ++liveHandles;
  key = t.has_storage() ? static_cast<const void*>(t.storage().unsafeGetStorageImpl())
                        : static_cast<const void*>(t.unsafeGetTensorImpl());
  auto& entry = storages[key];
  if (entry.handles++ > 0) return 0;
  entry.bytes = t.has_storage() ? t.storage().nbytes() : 0;
  entry.cuda = t.is_cuda();
  (entry.cuda ? cudaBytes : cpuBytes) += entry.bytes;
  return entry.cuda ? 0 : static_cast<int64_t>(entry.bytes);
}

int64_t accountRemove(const void* key) {
  std::lock_guard<std::mutex> lock(accountMutex);
  --liveHandles;
  auto it = storages.find(key);
  if (it == storages.end() || --it->second.handles > 0) return 0;
  const auto entry = it->second;
  storages.erase(it);
  (entry.cuda ? cudaBytes : cpuBytes) -= entry.bytes;
  return entry.cuda ? 0 : -static_cast<int64_t>(entry.bytes);
}

Napi::Value typedArrayFor(Napi::Env env, c10::ScalarType type, Napi::ArrayBuffer buffer, size_t numel) {
  switch (type) {
    case c10::ScalarType::Float: return Napi::Float32Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Double: return Napi::Float64Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Long: return Napi::BigInt64Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Int: return Napi::Int32Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Short: return Napi::Int16Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Char: return Napi::Int8Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Byte:
    case c10::ScalarType::Bool: return Napi::Uint8Array::New(env, numel, buffer, 0);
    case c10::ScalarType::Half:
    case c10::ScalarType::BFloat16: return Napi::Uint16Array::New(env, numel, buffer, 0);
    default: throwTypeError(env, std::string("Tensor.data: cannot read dtype ") + dtypeName(type) + " into a TypedArray");
  }
}

// The element type a TypedArray holds, used to check it against the declared source dtype.
size_t typedArrayElementSize(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: return 1;
    case napi_int16_array:
    case napi_uint16_array: return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: return 4;
    default: return 8;
  }
}

}  // namespace

TensorTable::Slot* TensorTable::slot(double handle) const {
  if (!(handle >= 0 && handle < static_cast<double>(kIndexLimit) * kGenerationLimit) || handle != std::trunc(handle)) return nullptr;
  const auto whole = static_cast<int64_t>(handle);
  const auto index = static_cast<int32_t>(whole % kIndexLimit);
  if (index >= size_) return nullptr;
  Slot* s = &chunks_[index / kChunk][index % kChunk];
  return s->generation == static_cast<uint32_t>(whole / kIndexLimit) ? s : nullptr;
}

double TensorTable::adopt(Napi::Env env, at::Tensor t) {
  int32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    if (size_ == kIndexLimit) throwError(env, "Tensor: too many live tensors (2^26); dispose the ones you no longer need");
    if (size_ % kChunk == 0) chunks_.emplace_back(new Slot[kChunk]);
    index = size_++;
  }
  Slot& s = chunks_[index / kChunk][index % kChunk];
  s.tensor = std::move(t);
  const int64_t bytes = accountAdd(s.tensor, s.storageKey);
  if (bytes) reportExternal(env, bytes);
  return static_cast<double>(s.generation) * kIndexLimit + index;
}

const at::Tensor* TensorTable::find(double handle) const {
  const Slot* s = slot(handle);
  return s && s->tensor.defined() ? &s->tensor : nullptr;
}

bool TensorTable::release(Napi::Env env, double handle) {
  Slot* s = slot(handle);
  if (!s || !s->tensor.defined()) return false;
  const int64_t bytes = accountRemove(s->storageKey);
  s->tensor = at::Tensor();
  s->storageKey = nullptr;
  s->generation = (s->generation + 1) % kGenerationLimit;
  free_.push_back(static_cast<int32_t>(static_cast<int64_t>(handle) % kIndexLimit));
  if (bytes) reportExternal(env, bytes);
  return true;
}

namespace {

TensorTable& table(Napi::Env env) { return *addonData(env).tensors; }

// The handle a JS Tensor holds under the registered symbol; false for anything that is not a Tensor.
bool handleOf(Napi::Env env, const Napi::Value& value, double& handle) {
  if (!value.IsObject()) return false;
  auto& key = addonData(env).tensorHandleKey;
  if (key.IsEmpty()) return false;
  const Napi::Value held = value.As<Napi::Object>().Get(key.Value());
  if (!held.IsNumber()) return false;
  handle = held.As<Napi::Number>().DoubleValue();
  return true;
}

// The tensor behind the handle in info[0], for the Tensor methods of lib/tensor.ts.
const at::Tensor& live(const Napi::CallbackInfo& info, const char* what) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) throwTypeError(env, std::string("Tensor.") + what + ": expected a tensor handle but received " + describeJsValue(info[0]));
  const at::Tensor* t = table(env).find(info[0].As<Napi::Number>().DoubleValue());
  if (t == nullptr) throwError(env, std::string("Tensor.") + what + ": the Tensor was already disposed");
  return *t;
}

Napi::Value SetTensorFactory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) throwTypeError(env, "setTensorFactory: expected a function but received " + describeJsValue(info[0]));
  if (!info[1].IsSymbol()) throwTypeError(env, "setTensorFactory: expected the handle's symbol key but received " + describeJsValue(info[1]));
  auto& data = addonData(env);
  data.tensorFactory = Napi::Persistent(info[0].As<Napi::Function>());
  data.tensorHandleKey = Napi::Persistent(info[1].As<Napi::Symbol>());
  return env.Undefined();
}

Napi::Value ReleaseTensor(const Napi::CallbackInfo& info) {
  if (info[0].IsNumber()) table(info.Env()).release(info.Env(), info[0].As<Napi::Number>().DoubleValue());
  return info.Env().Undefined();
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(accountMutex);
  auto result = Napi::Object::New(env);
  result.Set("numTensors", Napi::Number::New(env, static_cast<double>(liveHandles)));
  result.Set("numStorages", Napi::Number::New(env, static_cast<double>(storages.size())));
  result.Set("cpuBytes", Napi::Number::New(env, static_cast<double>(cpuBytes)));
  result.Set("cudaBytes", Napi::Number::New(env, static_cast<double>(cudaBytes)));
  return result;
}

Napi::Value Shape(const Napi::CallbackInfo& info) {
  const auto& t = live(info, "shape");
  // A nested tensor's ragged dimensions have no size: libtorch throws for them.
  const auto sizes = guarded(info.Env(), "Tensor.shape", [&] { return t.sizes().vec(); });
  auto shape = Napi::Array::New(info.Env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
  return shape;
}

Napi::Value Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtypeName(live(info, "dtype").scalar_type()));
}

Napi::Value Device(const Napi::CallbackInfo& info) {
  const auto& t = live(info, "device");
  return Napi::String::New(info.Env(), t.is_cpu() ? std::string("cpu") : t.device().str());
}

Napi::Value Ndim(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live(info, "ndim").dim()));
}

Napi::Value Numel(const Napi::CallbackInfo& info) {
  const auto& t = live(info, "numel");
  return Napi::Number::New(info.Env(), static_cast<double>(guarded(info.Env(), "Tensor.numel", [&] { return t.numel(); })));
}

Napi::Value GetRequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info, "requiresGrad").requires_grad());
}

Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = live(info, "requiresGrad");
  if (!info[1].IsBoolean()) throwTypeError(env, "Tensor.requiresGrad: expected a boolean but received " + describeJsValue(info[1]));
  guarded(env, "Tensor.requiresGrad", [&] { t.set_requires_grad(info[1].As<Napi::Boolean>().Value()); });
  return env.Undefined();
}

Napi::Value GetGrad(const Napi::CallbackInfo& info) {
  return tensors::Wrap(info.Env(), live(info, "grad").grad());
}

Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = live(info, "grad");
  if (info[1].IsNull() || info[1].IsUndefined()) {
    t.mutable_grad() = at::Tensor();
    return env.Undefined();
  }
  const auto grad = tensors::From(env, info[1], "Tensor.grad");
  guarded(env, "Tensor.grad", [&] {
    // As PyTorch's setter: backward would otherwise accumulate into a gradient of another kind.
    TORCH_CHECK(grad.sizes() == t.sizes(), "expected a gradient of shape ", t.sizes(), " but received ", grad.sizes());
    TORCH_CHECK(grad.scalar_type() == t.scalar_type(), "expected a gradient of dtype ", dtypeName(t.scalar_type()), " but received ", dtypeName(grad.scalar_type()));
    TORCH_CHECK(grad.device() == t.device(), "expected a gradient on ", t.device(), " but received one on ", grad.device());
    t.mutable_grad() = grad;
  });
  return env.Undefined();
}

Napi::Value IsLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info, "isLeaf").is_leaf());
}

// tensorBackward(handle, gradient: Tensor | null, retainGraph: boolean, createGraph: boolean)
Napi::Value Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = live(info, "backward");
  at::Tensor gradient;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) gradient = tensors::From(env, info[1], "Tensor.backward: gradient");
  c10::optional<bool> retain;
  if (info.Length() > 2 && info[2].IsBoolean()) retain = info[2].As<Napi::Boolean>().Value();
  const bool create = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  guarded(env, "Tensor.backward", [&] { runOnExecutorAndWait([&] { t.backward(gradient, retain, create); }); });
  return env.Undefined();
}

// tensorData(handle, dtype?: string) -> TypedArray copy of the tensor's values, converted to `dtype` (default: its own).
Napi::Value Data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& t = live(info, "data");
  const c10::ScalarType type = info[1].IsUndefined() ? t.scalar_type() : dtypeArg(env, info[1], "Tensor.data");
  at::Tensor host = guarded(env, "Tensor.data", [&] {
    auto h = t.detach().to(at::kCPU, type).contiguous();
    // A ZeroTensor (aten::_efficientzerotensor) has no memory behind it; others without storage cannot be read.
    if (h._is_zerotensor()) h = at::zeros(h.sizes(), at::TensorOptions().dtype(type));
    TORCH_CHECK(h.numel() == 0 || (h.has_storage() && h.data_ptr() != nullptr), "the tensor has no memory to read (", describeTensor(t), ")");
    return h;
  });
  auto buffer = Napi::ArrayBuffer::New(env, host.nbytes());
  if (host.nbytes()) std::memcpy(buffer.Data(), host.data_ptr(), host.nbytes());
  return typedArrayFor(env, type, buffer, static_cast<size_t>(host.numel()));
}

Napi::Value Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& t = live(info, "item");
  return guarded(env, "Tensor.item", [&]() -> Napi::Value {
    TORCH_CHECK(t.numel() == 1, "a Tensor with ", t.numel(), " elements cannot be converted to a number (shape ", t.sizes(), ")");
    auto scalar = t.item();
    if (scalar.isBoolean()) return Napi::Boolean::New(env, scalar.toBool());
    if (scalar.isIntegral(false)) return Napi::Number::New(env, static_cast<double>(scalar.toLong()));
    return Napi::Number::New(env, scalar.toDouble());
  });
}

Napi::Value IsContiguous(const Napi::CallbackInfo& info) {
  const auto& t = live(info, "isContiguous");
  return Napi::Boolean::New(info.Env(), guarded(info.Env(), "Tensor.isContiguous", [&] { return t.is_contiguous(); }));
}

Napi::Value SharesStorage(const Napi::CallbackInfo& info) {
  const auto& t = live(info, "sharesStorageWith");
  const auto& other = tensors::From(info.Env(), info[1], "Tensor.sharesStorageWith");
  return Napi::Boolean::New(info.Env(), guarded(info.Env(), "Tensor.sharesStorageWith", [&] {
    return t.has_storage() && other.has_storage() && t.storage().is_alias_of(other.storage());
  }));
}

}  // namespace

namespace tensors {

Napi::Value Wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  auto& data = addonData(env);
  if (data.tensorFactory.IsEmpty()) throwError(env, "torch-diffusion: no Tensor class is registered (lib/tensor.ts registers it when loaded)");
  const double handle = data.tensors->adopt(env, std::move(t));
  try {
    return data.tensorFactory.Call({Napi::Number::New(env, handle)});
  } catch (...) {
    data.tensors->release(env, handle);
    throw;
  }
}

bool IsTensor(Napi::Env env, const Napi::Value& value) {
  double handle;
  return handleOf(env, value, handle);
}

const at::Tensor& From(Napi::Env env, const Napi::Value& value, const std::string& what) {
  double handle;
  if (!handleOf(env, value, handle)) throwTypeError(env, what + ": expected a Tensor but received " + describeJsValue(value));
  const at::Tensor* t = table(env).find(handle);
  if (t == nullptr) throwError(env, what + ": the Tensor was already disposed");
  return *t;
}

void Init(Napi::Env env, Napi::Object exports) {
  addonData(env).tensors = std::make_unique<TensorTable>();
  const std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)> functions[] = {
      {"setTensorFactory", SetTensorFactory},
      {"releaseTensor", ReleaseTensor},
      {"memory", Memory},
      {"tensorShape", Shape},
      {"tensorDtype", Dtype},
      {"tensorDevice", Device},
      {"tensorNdim", Ndim},
      {"tensorNumel", Numel},
      {"tensorRequiresGrad", GetRequiresGrad},
      {"tensorSetRequiresGrad", SetRequiresGrad},
      {"tensorGrad", GetGrad},
      {"tensorSetGrad", SetGrad},
      {"tensorIsLeaf", IsLeaf},
      {"tensorBackward", Backward},
      {"tensorData", Data},
      {"tensorItem", Item},
      {"tensorIsContiguous", IsContiguous},
      {"tensorSharesStorage", SharesStorage},
  };
  for (const auto& [name, fn] : functions) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace tensors

Napi::Value TensorFromBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string where = "tensor";
  if (!info[0].IsTypedArray()) throwTypeError(env, where + ": expected a TypedArray of values but received " + describeJsValue(info[0]));
  const auto shape = shapeArg(env, info[1], where);
  const auto source = dtypeArg(env, info[2], where + ": source dtype");
  const auto target = dtypeArg(env, info[3], where + ": dtype");
  const auto device = deviceArg(env, info[4], where + ": device");
  const int64_t numel = checkedNumel(env, shape, where);
  // The values' address straight from Node-API: also right for a SharedArrayBuffer or an offset view.
  napi_typedarray_type arrayType;
  size_t length = 0;
  void* values = nullptr;
  if (napi_get_typedarray_info(env, info[0], &arrayType, &length, &values, nullptr, nullptr) != napi_ok) {
    throwTypeError(env, where + ": cannot read the TypedArray's values");
  }
  const size_t elementSize = c10::elementSize(source);
  if (typedArrayElementSize(arrayType) != elementSize) {
    throwTypeError(env, where + ": a TypedArray of " + std::to_string(typedArrayElementSize(arrayType)) + "-byte elements cannot hold " +
                            dtypeName(source) + " values (" + std::to_string(elementSize) + " bytes each)");
  }
  if (static_cast<int64_t>(length) != numel) {
    throwError(env, where + ": " + std::to_string(length) + " values do not fill shape " +
                        c10::str(c10::IntArrayRef(shape)) + " (" + std::to_string(numel) + " elements)");
  }
  at::Tensor t = guarded(env, where, [&] {
    auto host = at::empty(shape, at::TensorOptions().dtype(source));
    if (numel) std::memcpy(host.data_ptr(), values, numel * elementSize);
    // A bool is one byte holding 0 or 1; any other byte value is undefined behaviour in the kernels.
    if (source == c10::ScalarType::Bool) host = host.view(c10::ScalarType::Byte).ne(0);
    return host.to(device, target);
  });
  return tensors::Wrap(env, std::move(t));
}

}  // namespace td
