#include "dispatch.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "addon_data.h"
#include "checks.h"
#include "convert.h"
#include "executor.h"
#include "generator.h"
#include "tensor.h"

namespace td {

namespace {

struct OpEntry {
  c10::OperatorHandle handle;
  std::string name;  // as the caller spelled it, e.g. "aten::add.Tensor"
  OpCheckPlan plan;
  bool returnsTensor;  // exactly one Tensor: callTensorOp may hand back a bare handle
};

// Resolved ops live for the whole process; a deque keeps references stable while it grows.
std::mutex opsMutex;
std::deque<OpEntry> ops;
std::unordered_map<std::string, size_t> opIndex;

const OpEntry& entryFor(Napi::Env env, const Napi::Value& value, const std::string& where) {
  if (!value.IsNumber()) throwTypeError(env, where + ": expected an op handle from resolveOp but received " + describeJsValue(value));
  const double index = value.As<Napi::Number>().DoubleValue();
  std::lock_guard<std::mutex> lock(opsMutex);
  if (!(index >= 0 && index < static_cast<double>(ops.size())) || index != std::trunc(index)) {
    throwTypeError(env, where + ": unknown op handle " + describeJsValue(value));
  }
  return ops[static_cast<size_t>(index)];
}

std::string overloadsOf(const std::string& baseName) {
  std::string list;
  for (const auto& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name != baseName) continue;
    list += (list.empty() ? "" : ", ") + name.name + (name.overload_name.empty() ? "" : "." + name.overload_name);
  }
  return list;
}

// "(self: [2, 3] float32 cpu, other: [4] float32 cpu)" for messages about a failed call, from
// the tensor handles passed in (the boxed call consumed the stack).
std::string describeArguments(Napi::Env env, const c10::FunctionSchema& schema, const InputTensors& inputs) {
  std::string text;
  for (size_t j = 0; j < inputs.entries.size(); ++j) {
    const auto& name = schema.arguments()[inputs.argumentOf[j]].name();
    text += (text.empty() ? "" : ", ") + name + ": " + describeTensor(inputs.entries[j].tensor);
  }
  return text.empty() ? "" : " (" + text + ")";
}

// The boxed stack for one call: positional then keyword arguments, converted by the schema's types.
std::vector<c10::IValue> convertArguments(Napi::Env env, const OpEntry& entry, const Napi::Array& positional, const Napi::Object& keywords,
                                          InputTensors& inputs) {
  const auto& schema = entry.handle.schema();
  const auto& params = schema.arguments();
  // Keyword arguments by schema position: one lookup per keyword given, none per parameter.
  std::vector<Napi::Value> byKeyword;
  if (!keywords.IsEmpty()) {
    const auto names = keywords.GetPropertyNames();
    for (uint32_t k = 0; k < names.Length(); ++k) {
      const Napi::Value key = names.Get(k);
      const std::string keyName = key.ToString().Utf8Value();
      size_t i = 0;
      while (i < params.size() && params[i].name() != keyName) ++i;
      if (i == params.size()) throwError(env, entry.name + ": unknown keyword argument '" + keyName + "'; schema: " + c10::toString(schema));
      if (i < positional.Length()) throwError(env, entry.name + ": argument '" + keyName + "' given both by position and by name");
      if (byKeyword.empty()) byKeyword.resize(params.size());
      byKeyword[i] = keywords.Get(key);
    }
  }
  std::vector<c10::IValue> stack;
  stack.reserve(params.size());
  const uint32_t given = positional.Length();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& param = params[i];
    Napi::Value value;
    if (i < given) value = positional.Get(static_cast<uint32_t>(i));
    else if (!byKeyword.empty() && !byKeyword[i].IsEmpty()) value = byKeyword[i];
    else value = env.Undefined();
    if (value.IsUndefined()) {
      if (param.default_value()) {
        stack.push_back(*param.default_value());
        continue;
      }
      if (param.type()->kind() != c10::TypeKind::OptionalType) {
        throwError(env, entry.name + ": missing argument '" + param.name() + "'; schema: " + c10::toString(schema));
      }
    }
    // real_type(): ScalarType, Layout and MemoryFormat, which type() declares as int, so their values are range-checked.
    stack.push_back(toIValue(env, value, param.real_type(), entry.plan.what[i], &inputs, param.N()));
    inputs.argumentOf.resize(inputs.entries.size(), i);
  }
  return stack;
}

// Elements in the call's tensor arguments: what decides whether it is worth the executor (executor.h).
int64_t elementsIn(const std::vector<c10::IValue>& stack) {
  int64_t total = 0;
  for (const auto& value : stack) {
    if (value.isTensor()) {
      total += value.toTensor().numel();
    } else if (value.isTensorList()) {
      const auto list = value.toTensorList();
      for (size_t i = 0; i < list.size(); ++i) {
        const at::Tensor t = list.get(i);
        total += t.defined() ? t.numel() : 0;
      }
    }
  }
  return total;
}

}  // namespace

Napi::Value ResolveOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throwTypeError(env, "op: expected an op name such as \"aten::add.Tensor\"");
  const std::string full = info[0].As<Napi::String>().Utf8Value();
  {
    std::lock_guard<std::mutex> lock(opsMutex);
    auto it = opIndex.find(full);
    if (it != opIndex.end()) return Napi::Number::New(env, static_cast<double>(it->second));
  }
  const auto sep = full.find("::");
  if (sep == std::string::npos) throwError(env, "op: \"" + full + "\" is not an op name; expected namespace::name[.overload], e.g. \"aten::add.Tensor\"");
  const auto dot = full.find('.', sep + 2);
  const std::string base = full.substr(0, dot);
  const std::string overload = dot == std::string::npos ? "" : full.substr(dot + 1);
  auto handle = c10::Dispatcher::singleton().findSchema({base, overload});
  if (!handle) {
    const auto known = overloadsOf(base);
    throwError(env, "op: unknown op \"" + full + "\"" + (known.empty() ? "" : "; overloads that exist: " + known));
  }
  std::lock_guard<std::mutex> lock(opsMutex);
  const auto& returns = handle->schema().returns();
  const bool returnsTensor = returns.size() == 1 && returns[0].type()->kind() == c10::TypeKind::TensorType;
  ops.push_back({*handle, full, planOpChecks(full, handle->schema()), returnsTensor});
  opIndex[full] = ops.size() - 1;
  return Napi::Number::New(env, static_cast<double>(ops.size() - 1));
}

Napi::Value OpNames(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto names = c10::Dispatcher::singleton().getAllOpNames();
  auto result = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& name = names[i];
    result.Set(static_cast<uint32_t>(i), Napi::String::New(env, name.name + (name.overload_name.empty() ? "" : "." + name.overload_name)));
  }
  return result;
}

Napi::Value OpSchema(const Napi::CallbackInfo& info) {
  const auto& entry = entryFor(info.Env(), info[0], "opSchema");
  return Napi::String::New(info.Env(), c10::toString(entry.handle.schema()));
}

namespace {

// callOp, and callTensorOp with `handleResult`: a new tensor comes back as its bare handle, which
// lib/dispatch.ts wraps; asking JS's Tensor factory from here costs a C++ -> JS call per op.
Napi::Value callOpWith(const Napi::CallbackInfo& info, bool handleResult) {
  Napi::Env env = info.Env();
  const auto& entry = entryFor(env, info[0], handleResult ? "callTensorOp" : "callOp");
  if (handleResult && !entry.returnsTensor) throwTypeError(env, "callTensorOp: " + entry.name + " does not return exactly one Tensor");
  const auto& schema = entry.handle.schema();
  const auto& params = schema.arguments();
  if (!info[1].IsArray()) throwTypeError(env, entry.name + ": expected the arguments as an array but received " + describeJsValue(info[1]));
  auto positional = info[1].As<Napi::Array>();
  if (!info[2].IsUndefined() && !info[2].IsNull() && !info[2].IsObject()) {
    throwTypeError(env, entry.name + ": expected keyword arguments as an object but received " + describeJsValue(info[2]));
  }
  Napi::Object keywords = info[2].IsObject() ? info[2].As<Napi::Object>() : Napi::Object();
  if (positional.Length() > params.size()) {
    throwError(env, entry.name + ": expected at most " + std::to_string(params.size()) + " arguments but received " +
                        std::to_string(positional.Length()) + "; schema: " + c10::toString(schema));
  }
  InputTensors inputs;
  // Conversion and checks throw our own Errors; guarded() turns anything else (e.g. bad_alloc) into one.
  auto stack = guarded(env, entry.name, [&] {
    auto converted = convertArguments(env, entry, positional, keywords, inputs);
    checkOpCall(env, entry.name, schema, entry.plan, converted);
    return converted;
  });
  try {
    if (elementsIn(stack) >= kExecutorMinElements) {
      runOnExecutorAndWait([&] { entry.handle.callBoxed(&stack); });
    } else {
      entry.handle.callBoxed(&stack);
    }
  } catch (const std::exception& e) {
    // Our own ops already name themselves in their messages.
    std::string message = errorMessage(e);
    if (message.rfind(schema.name() + ":", 0) != 0) message = entry.name + ": " + message;
    throwError(env, message + describeArguments(env, schema, inputs));
  }
  if (stack.empty()) return env.Undefined();
  if (handleResult && stack.size() == 1 && stack[0].isTensor()) {
    const at::Tensor& t = stack[0].toTensor();
    const Napi::Object input = inputs.objectOf(t);
    if (!input.IsEmpty()) return input;
    if (!t.defined()) return env.Null();
    return Napi::Number::New(env, addonData(env).tensors->adopt(env, t));
  }
  if (stack.size() == 1) return fromIValue(env, stack[0], &inputs);
  auto results = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); ++i) results.Set(static_cast<uint32_t>(i), fromIValue(env, stack[i], &inputs));
  return results;
}

}  // namespace

Napi::Value CallOp(const Napi::CallbackInfo& info) { return callOpWith(info, false); }
Napi::Value CallTensorOp(const Napi::CallbackInfo& info) { return callOpWith(info, true); }

Napi::Value OpReturnsTensor(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), entryFor(info.Env(), info[0], "opReturnsTensor").returnsTensor);
}

namespace {

// add / sub / mul / div of a tensor and a tensor or number, called unboxed on tensor handles; the
// result's handle, or undefined where CallOp must take the call (other argument kinds, tensors for
// the executor, any error: CallOp words the errors, and these ops change nothing, so a retry is
// harmless). Most of a small op's cost was the schema-driven path around it
// (scripts/bench/sampling-loop.ts, section 3).
Napi::Value binaryOn(const Napi::CallbackInfo& info, bool otherIsTensor) {
  Napi::Env env = info.Env();
  auto& table = *addonData(env).tensors;
  const auto tensorAt = [&](size_t i) -> const at::Tensor* {
    return info.Length() > i && info[i].IsNumber() ? table.find(info[i].As<Napi::Number>().DoubleValue()) : nullptr;
  };
  const at::Tensor* self = tensorAt(1);
  if (!info[0].IsNumber() || self == nullptr) return env.Undefined();
  const int code = info[0].As<Napi::Number>().Int32Value();
  const at::Tensor* other = nullptr;
  c10::Scalar otherScalar;
  if (otherIsTensor) {
    other = tensorAt(2);
    if (other == nullptr) return env.Undefined();
  } else {
    if (info.Length() < 3 || !(info[2].IsNumber() || info[2].IsBoolean())) return env.Undefined();
    otherScalar = toIValue(env, info[2], c10::NumberType::get(), "other").toScalar();
  }
  c10::Scalar alpha = 1;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsNumber()) return env.Undefined();
    alpha = toIValue(env, info[3], c10::NumberType::get(), "alpha").toScalar();
  }
  if (self->numel() + (other ? other->numel() : 0) >= kExecutorMinElements) return env.Undefined();
  at::Tensor out;
  try {
    switch (code) {
      case 0: out = other ? at::add(*self, *other, alpha) : at::add(*self, otherScalar, alpha); break;
      case 1: out = other ? at::sub(*self, *other, alpha) : at::sub(*self, otherScalar, alpha); break;
      case 2: out = other ? at::mul(*self, *other) : at::mul(*self, otherScalar); break;
      case 3: out = other ? at::div(*self, *other) : at::div(*self, otherScalar); break;
      default: return env.Undefined();
    }
  } catch (const std::exception&) {
    return env.Undefined();
  }
  return Napi::Number::New(env, table.adopt(env, std::move(out)));
}

}  // namespace

Napi::Value BinaryOp(const Napi::CallbackInfo& info) { return binaryOn(info, true); }
Napi::Value BinaryScalarOp(const Napi::CallbackInfo& info) { return binaryOn(info, false); }

Napi::Value FactoryOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsArray() || !info[2].IsNumber()) return env.Undefined();
  const int code = info[0].As<Napi::Number>().Int32Value();
  const Napi::Array shapeArray = info[1].As<Napi::Array>();
  const uint32_t ndim = shapeArray.Length();
  if (ndim > 8) return env.Undefined();
  int64_t shape[8];
  double elements = 1;
  for (uint32_t i = 0; i < ndim; ++i) {
    const Napi::Value size = shapeArray.Get(i);
    const double d = size.IsNumber() ? size.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d != std::trunc(d)) return env.Undefined();
    shape[i] = static_cast<int64_t>(d);
    elements *= d;
  }
  // Large ones go through callOp, which runs them on the executor.
  if (elements >= static_cast<double>(kExecutorMinElements)) return env.Undefined();
  const double typeId = info[2].As<Napi::Number>().DoubleValue();
  // Range first: ScalarType is an int8_t enum.
  if (!(typeId >= 0 && typeId < 64) || typeId != std::trunc(typeId) || !isOpDtype(static_cast<c10::ScalarType>(static_cast<int>(typeId)))) return env.Undefined();
  const auto dtype = static_cast<c10::ScalarType>(static_cast<int>(typeId));
  // Refused before the call: a libtorch error costs milliseconds, and callOp would raise it again.
  if ((code == 2 || code == 3) && !at::isFloatingType(dtype)) return env.Undefined();
  c10::optional<at::Generator> generator;
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    const at::Generator* found = GeneratorWrap::Find(info[3]);
    if (found == nullptr) return env.Undefined();
    generator = *found;
  }
  const at::IntArrayRef size(shape, ndim);
  const auto options = at::TensorOptions().dtype(dtype);
  at::Tensor out;
  try {
    switch (code) {
      case 0: out = at::zeros(size, options); break;
      case 1: out = at::ones(size, options); break;
      case 2: out = at::randn(size, generator, options); break;
      case 3: out = at::rand(size, generator, options); break;
      default: return env.Undefined();
    }
  } catch (const std::exception&) {
    return env.Undefined();
  }
  return Napi::Number::New(env, addonData(env).tensors->adopt(env, std::move(out)));
}

}  // namespace td
