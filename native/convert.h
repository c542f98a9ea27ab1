// JS values <-> c10::IValue, directed by the TorchScript type the callee declares.
#pragma once

#include <vector>

#include "common.h"

namespace td {

// Tensors handed in, so that an op returning one of them (in-place, out=) gives back the same JS object.
struct InputTensors {
  struct Entry {
    at::Tensor tensor;
    Napi::Object object;
  };
  std::vector<Entry> entries;
  // Index of the schema argument each entry came from (filled by the op caller, for error messages).
  std::vector<size_t> argumentOf;

  // The JS Tensor handed in that `t` is, or an empty object when it is none of them.
  Napi::Object objectOf(const at::Tensor& t) const {
    if (t.defined()) {
      for (const auto& entry : entries) {
        if (entry.tensor.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return entry.object;
      }
    }
    return Napi::Object();
  }
};

// Converts `value` to an IValue of `type`; `what` names the argument in error messages.
c10::IValue toIValue(Napi::Env env, const Napi::Value& value, const c10::TypePtr& type, const std::string& what,
                     InputTensors* inputs = nullptr, c10::optional<int32_t> fixedListSize = c10::nullopt);

// Converts a value whose type nobody declared: plain objects become Dict[str, Any], arrays tuples.
c10::IValue toIValueUntyped(Napi::Env env, const Napi::Value& value, const std::string& what);

// Converts a result back to JS: Tensor -> tensor handle, tuples/lists -> arrays, dicts -> plain objects.
// Containers nested deeper than kMaxNesting (checks.h) are an Error.
Napi::Value fromIValue(Napi::Env env, const c10::IValue& value, const InputTensors* inputs = nullptr);

// Frees a container value nobody else holds without recursion (libtorch's destructors recurse
// once per level, so a loaded file nested a million deep would overflow the stack).
void releaseFlat(c10::IValue value);

}  // namespace td
