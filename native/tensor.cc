#include "tensor.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "addon_data.h"
#include "checks.h"
#include "executor.h"

namespace td {

namespace {

// Distinguishes our tensor handles from look-alike objects (Object.create(Tensor.prototype), ...).
constexpr napi_type_tag kTensorTag = {0x7d1f0c3a9b2e4d51ULL, 0xa4c86e0f13b75d29ULL};

// The tensor a Wrap() call is handing to the JS constructor; the constructor takes it.
thread_local at::Tensor pendingTensor;

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

Napi::Function TensorWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {
                         InstanceMethod<&TensorWrap::Dispose>("dispose"),
                         InstanceAccessor<&TensorWrap::IsDisposed>("isDisposed"),
                         InstanceAccessor<&TensorWrap::Shape>("shape"),
                         InstanceAccessor<&TensorWrap::Dtype>("dtype"),
                         InstanceAccessor<&TensorWrap::Device>("device"),
                         InstanceAccessor<&TensorWrap::Ndim>("ndim"),
                         InstanceAccessor<&TensorWrap::Numel>("numel"),
                         InstanceAccessor<&TensorWrap::GetRequiresGrad, &TensorWrap::SetRequiresGrad>("requiresGrad"),
                         InstanceAccessor<&TensorWrap::GetGrad, &TensorWrap::SetGrad>("grad"),
                         InstanceAccessor<&TensorWrap::IsLeaf>("isLeaf"),
                         InstanceMethod<&TensorWrap::Backward>("_backward"),
                         InstanceMethod<&TensorWrap::Data>("_data"),
                         InstanceMethod<&TensorWrap::Item>("_item"),
                         InstanceMethod<&TensorWrap::IsContiguous>("isContiguous"),
                         InstanceMethod<&TensorWrap::SameStorage>("sharesStorageWith"),
                     });
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  Napi::Env env = info.Env();
  if (!pendingTensor.defined()) {
    throwTypeError(env, "Tensor: tensors are created by tensor(), zeros(), randn() and the other factories, not with new");
  }
  tensor_ = std::move(pendingTensor);
  pendingTensor = at::Tensor();
  info.This().As<Napi::Object>().TypeTag(&kTensorTag);
  const int64_t bytes = accountAdd(tensor_, storageKey_);
  if (bytes) reportExternal(env, bytes);
}

TensorWrap::~TensorWrap() {
  // GC safety net: the finalizer frees what dispose() was not called for. V8's external
  // counter is not adjusted here, since finalizers may run while the environment tears down.
  if (tensor_.defined()) {
    accountRemove(storageKey_);
    tensor_ = at::Tensor();
  }
}

void TensorWrap::release(Napi::Env env) {
  if (!tensor_.defined()) return;
  const int64_t bytes = accountRemove(storageKey_);
  tensor_ = at::Tensor();
  if (bytes) reportExternal(env, bytes);
}

Napi::Value TensorWrap::Wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  auto& data = addonData(env);
  pendingTensor = std::move(t);
  try {
    auto& ctor = data.tensorClass.IsEmpty() ? data.nativeTensorClass : data.tensorClass;
    return ctor.New({});
  } catch (...) {
    pendingTensor = at::Tensor();
    throw;
  }
}

bool TensorWrap::IsTensor(Napi::Env env, const Napi::Value& value) {
  return value.IsObject() && value.As<Napi::Object>().CheckTypeTag(&kTensorTag);
}

TensorWrap* TensorWrap::UnwrapChecked(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!IsTensor(env, value)) throwTypeError(env, what + ": expected a Tensor but received " + describeJsValue(value));
  auto* wrap = Napi::ObjectWrap<TensorWrap>::Unwrap(value.As<Napi::Object>());
  if (wrap->disposed()) throwError(env, what + ": the Tensor was already disposed");
  return wrap;
}

const at::Tensor& TensorWrap::From(Napi::Env env, const Napi::Value& value, const std::string& what) {
  return UnwrapChecked(env, value, what)->tensor_;
}

const at::Tensor& TensorWrap::live(const Napi::Env& env, const char* what) const {
  if (!tensor_.defined()) throwError(env, std::string("Tensor.") + what + ": the Tensor was already disposed");
  return tensor_;
}

Napi::Value TensorWrap::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::lock_guard<std::mutex> lock(accountMutex);
  auto result = Napi::Object::New(env);
  result.Set("numTensors", Napi::Number::New(env, static_cast<double>(liveHandles)));
  result.Set("numStorages", Napi::Number::New(env, static_cast<double>(storages.size())));
  result.Set("cpuBytes", Napi::Number::New(env, static_cast<double>(cpuBytes)));
  result.Set("cudaBytes", Napi::Number::New(env, static_cast<double>(cudaBytes)));
  return result;
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  release(info.Env());
  return info.Env().Undefined();
}

Napi::Value TensorWrap::IsDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), disposed());
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  const auto& t = live(info.Env(), "shape");
  // A nested tensor's ragged dimensions have no size: libtorch throws for them.
  const auto sizes = guarded(info.Env(), "Tensor.shape", [&] { return t.sizes().vec(); });
  auto shape = Napi::Array::New(info.Env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
  return shape;
}

Napi::Value TensorWrap::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtypeName(live(info.Env(), "dtype").scalar_type()));
}

Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  const auto& t = live(info.Env(), "device");
  return Napi::String::New(info.Env(), t.is_cpu() ? std::string("cpu") : t.device().str());
}

Napi::Value TensorWrap::Ndim(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env(), "ndim").dim()));
}

Napi::Value TensorWrap::Numel(const Napi::CallbackInfo& info) {
  const auto& t = live(info.Env(), "numel");
  return Napi::Number::New(info.Env(), static_cast<double>(guarded(info.Env(), "Tensor.numel", [&] { return t.numel(); })));
}

Napi::Value TensorWrap::GetRequiresGrad(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env(), "requiresGrad").requires_grad());
}

void TensorWrap::SetRequiresGrad(const Napi::CallbackInfo& info, const Napi::Value& value) {
  Napi::Env env = info.Env();
  if (!value.IsBoolean()) throwTypeError(env, "Tensor.requiresGrad: expected a boolean but received " + describeJsValue(value));
  auto t = live(env, "requiresGrad");
  guarded(env, "Tensor.requiresGrad", [&] { t.set_requires_grad(value.As<Napi::Boolean>().Value()); });
}

Napi::Value TensorWrap::GetGrad(const Napi::CallbackInfo& info) {
  return Wrap(info.Env(), live(info.Env(), "grad").grad());
}

void TensorWrap::SetGrad(const Napi::CallbackInfo& info, const Napi::Value& value) {
  Napi::Env env = info.Env();
  auto t = live(env, "grad");
  if (value.IsNull() || value.IsUndefined()) {
    t.mutable_grad() = at::Tensor();
    return;
  }
  const auto& grad = From(env, value, "Tensor.grad");
  guarded(env, "Tensor.grad", [&] {
    // As PyTorch's setter: backward would otherwise accumulate into a gradient of another kind.
    TORCH_CHECK(grad.sizes() == t.sizes(), "expected a gradient of shape ", t.sizes(), " but received ", grad.sizes());
    TORCH_CHECK(grad.scalar_type() == t.scalar_type(), "expected a gradient of dtype ", dtypeName(t.scalar_type()), " but received ", dtypeName(grad.scalar_type()));
    TORCH_CHECK(grad.device() == t.device(), "expected a gradient on ", t.device(), " but received one on ", grad.device());
    t.mutable_grad() = grad;
  });
}

Napi::Value TensorWrap::IsLeaf(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env(), "isLeaf").is_leaf());
}

// _backward(gradient | null, retainGraph: boolean, createGraph: boolean)
Napi::Value TensorWrap::Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = live(env, "backward");
  at::Tensor gradient;
  if (info.Length() > 0 && !info[0].IsNull() && !info[0].IsUndefined()) gradient = From(env, info[0], "Tensor.backward: gradient");
  c10::optional<bool> retain;
  if (info.Length() > 1 && info[1].IsBoolean()) retain = info[1].As<Napi::Boolean>().Value();
  const bool create = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  guarded(env, "Tensor.backward", [&] { runOnExecutorAndWait([&] { t.backward(gradient, retain, create); }); });
  return env.Undefined();
}

// _data(dtype?: string) -> TypedArray copy of the tensor's values, converted to `dtype` (default: its own).
Napi::Value TensorWrap::Data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& t = live(env, "data");
  const c10::ScalarType type = info[0].IsUndefined() ? t.scalar_type() : dtypeArg(env, info[0], "Tensor.data");
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

Napi::Value TensorWrap::Item(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& t = live(env, "item");
  return guarded(env, "Tensor.item", [&]() -> Napi::Value {
    TORCH_CHECK(t.numel() == 1, "a Tensor with ", t.numel(), " elements cannot be converted to a number (shape ", t.sizes(), ")");
    auto scalar = t.item();
    if (scalar.isBoolean()) return Napi::Boolean::New(env, scalar.toBool());
    if (scalar.isIntegral(false)) return Napi::Number::New(env, static_cast<double>(scalar.toLong()));
    return Napi::Number::New(env, scalar.toDouble());
  });
}

Napi::Value TensorWrap::IsContiguous(const Napi::CallbackInfo& info) {
  const auto& t = live(info.Env(), "isContiguous");
  return Napi::Boolean::New(info.Env(), guarded(info.Env(), "Tensor.isContiguous", [&] { return t.is_contiguous(); }));
}

Napi::Value TensorWrap::SameStorage(const Napi::CallbackInfo& info) {
  const auto& t = live(info.Env(), "sharesStorageWith");
  const auto& other = From(info.Env(), info[0], "Tensor.sharesStorageWith");
  return Napi::Boolean::New(info.Env(), guarded(info.Env(), "Tensor.sharesStorageWith", [&] {
    return t.has_storage() && other.has_storage() && t.storage().is_alias_of(other.storage());
  }));
}

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
  return TensorWrap::Wrap(env, std::move(t));
}

}  // namespace td
