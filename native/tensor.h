// Tensors handed to JS. Each environment keeps a table of at::Tensor slots; a JS Tensor
// (lib/tensor.ts) holds its slot's index, the handle, under a symbol key. dispose() frees the
// slot, and a FinalizationRegistry frees it for tensors the GC collects. A process-wide account
// of live handles and the storage bytes they keep alive backs memory().
//
// One Napi::ObjectWrap per tensor used to cost about 1 µs of every small op (the C++ -> JS
// constructor round trip, the wrap's reference and its finalizer); a slot costs a few ns.
#pragma once

#include <memory>
#include <vector>

#include "common.h"

namespace td {

class TensorTable {
 public:
  TensorTable() = default;
  TensorTable(const TensorTable&) = delete;
  TensorTable& operator=(const TensorTable&) = delete;

  // Takes `t` into a free slot; returns its handle: the slot's index plus its generation times
  // kIndexLimit, so that the handle of a freed slot never names the tensor that reuses it (the
  // FinalizationRegistry frees by handle, and may run long after dispose() freed the slot).
  double adopt(Napi::Env env, at::Tensor t);
  // The live tensor behind `handle`, or null for a freed or unknown one.
  const at::Tensor* find(double handle) const;
  // Frees the slot; false when it was not live.
  bool release(Napi::Env env, double handle);

 private:
  struct Slot {
    at::Tensor tensor;
    const void* storageKey = nullptr;
    uint32_t generation = 0;
  };
  static constexpr int32_t kChunk = 4096;
  // 2^26 live tensors; generations wrap at 2^27 (handles stay below 2^53, exact as JS numbers).
  static constexpr int32_t kIndexLimit = 1 << 26;
  static constexpr uint32_t kGenerationLimit = 1u << 27;
  // Chunks never move, so a reference into a slot stays valid while the table grows.
  std::vector<std::unique_ptr<Slot[]>> chunks_;
  std::vector<int32_t> free_;
  int32_t size_ = 0;

  // The slot a handle names while that slot still holds the handle's generation; null otherwise.
  Slot* slot(double handle) const;
};

namespace tensors {

// Hands `t` to JS as a Tensor (lib/tensor.ts registers the factory). An undefined tensor becomes null.
Napi::Value Wrap(Napi::Env env, at::Tensor t);
// Whether `value` is a live or disposed Tensor object.
bool IsTensor(Napi::Env env, const Napi::Value& value);
// The tensor behind a JS Tensor; throws a TypeError naming `what` for anything else, an Error for a disposed one.
const at::Tensor& From(Napi::Env env, const Napi::Value& value, const std::string& what);

// The tensor functions of the binding (tensorShape, releaseTensor, ...) and memory().
void Init(Napi::Env env, Napi::Object exports);

}  // namespace tensors

// Creates a tensor from a TypedArray holding `numel(shape)` elements of `source` dtype,
// then converts it to `dtype` on `device`. Arguments: (typedArray, shape, sourceDtype, dtype, device).
Napi::Value TensorFromBuffer(const Napi::CallbackInfo& info);

}  // namespace td
