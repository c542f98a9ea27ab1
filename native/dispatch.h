// The one generic op path: resolve any registered operator by schema name once,
// then call it boxed, converting JS arguments by the schema's declared types.
#pragma once

#include "common.h"

namespace td {

// resolveOp("aten::add.Tensor") -> integer handle. Unknown names throw, listing the overloads that exist.
Napi::Value ResolveOp(const Napi::CallbackInfo& info);
// callOp(handle, positionalArgs: unknown[], keywordArgs?: object) -> converted result(s).
Napi::Value CallOp(const Napi::CallbackInfo& info);
// callTensorOp(handle, positionalArgs, keywordArgs?) for an op returning exactly one Tensor: a new
// tensor's handle (a number), an input Tensor it returned (in place, out=), or null.
Napi::Value CallTensorOp(const Napi::CallbackInfo& info);
// opReturnsTensor(handle) -> whether callTensorOp takes the op.
Napi::Value OpReturnsTensor(const Napi::CallbackInfo& info);
// opNames() -> every registered op as "namespace::name[.overload]" (for tools and the fuzz test).
Napi::Value OpNames(const Napi::CallbackInfo& info);
// opSchema(handle) -> the schema string, for error messages and docs.
Napi::Value OpSchema(const Napi::CallbackInfo& info);
// binaryOp(code 0 add | 1 sub | 2 mul | 3 div, selfHandle, otherHandle, alpha?) and
// binaryScalarOp(code, selfHandle, other: number | boolean, alpha?) -> the result's tensor handle,
// or undefined where callOp must take the call (see dispatch.cc).
Napi::Value BinaryOp(const Napi::CallbackInfo& info);
Napi::Value BinaryScalarOp(const Napi::CallbackInfo& info);
// factoryOp(code 0 zeros | 1 ones | 2 randn | 3 rand, shape: number[], dtypeId, generator?) -> a new
// CPU tensor's handle, called unboxed, or undefined where callOp must take the call (other
// arguments, large tensors for the executor, any error: callOp words the errors).
Napi::Value FactoryOp(const Napi::CallbackInfo& info);

}  // namespace td
