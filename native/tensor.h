// NativeTensor: a JS handle owning one at::Tensor, with explicit dispose and a
// process-wide account of live handles and the storage bytes they keep alive.
#pragma once

#include "common.h"

namespace td {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);

  // Hands `t` to JS as an instance of the registered tensor class. An undefined tensor becomes null.
  static Napi::Value Wrap(Napi::Env env, at::Tensor t);
  static bool IsTensor(Napi::Env env, const Napi::Value& value);
  // The tensor behind a JS value; throws a TypeError naming `what` for anything else or a disposed handle.
  static const at::Tensor& From(Napi::Env env, const Napi::Value& value, const std::string& what);
  static TensorWrap* UnwrapChecked(Napi::Env env, const Napi::Value& value, const std::string& what);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

  const at::Tensor& tensor() const { return tensor_; }
  bool disposed() const { return !tensor_.defined(); }

  // Live-handle account, read by memory().
  static Napi::Value Memory(const Napi::CallbackInfo& info);

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value IsDisposed(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Ndim(const Napi::CallbackInfo& info);
  Napi::Value Numel(const Napi::CallbackInfo& info);
  Napi::Value GetRequiresGrad(const Napi::CallbackInfo& info);
  void SetRequiresGrad(const Napi::CallbackInfo& info, const Napi::Value& value);
  Napi::Value GetGrad(const Napi::CallbackInfo& info);
  void SetGrad(const Napi::CallbackInfo& info, const Napi::Value& value);
  Napi::Value IsLeaf(const Napi::CallbackInfo& info);
  Napi::Value Backward(const Napi::CallbackInfo& info);
  Napi::Value Data(const Napi::CallbackInfo& info);
  Napi::Value Item(const Napi::CallbackInfo& info);
  Napi::Value IsContiguous(const Napi::CallbackInfo& info);
  Napi::Value SameStorage(const Napi::CallbackInfo& info);

  const at::Tensor& live(const Napi::Env& env, const char* what) const;
  void release(Napi::Env env);

  at::Tensor tensor_;
  const void* storageKey_ = nullptr;
};

// Creates a tensor from a TypedArray holding `numel(shape)` elements of `source` dtype,
// then converts it to `dtype` on `device`. Arguments: (typedArray, shape, sourceDtype, dtype, device).
Napi::Value TensorFromBuffer(const Napi::CallbackInfo& info);

}  // namespace td
