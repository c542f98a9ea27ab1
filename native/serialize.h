// Tensors and containers of them <-> bytes in PyTorch's pickle format (torch.load reads them).
#pragma once

#include "common.h"

namespace td {

// saveValue(value) -> Buffer. `value`: Tensor, number, string, boolean, null, arrays and plain objects of those.
Napi::Value SaveValue(const Napi::CallbackInfo& info);
// loadValue(Buffer) -> the value saved (dicts as plain objects, tuples and lists as arrays).
Napi::Value LoadValue(const Napi::CallbackInfo& info);

}  // namespace td
