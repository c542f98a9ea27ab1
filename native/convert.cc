#include "convert.h"

#include <cmath>

#include "checks.h"
#include "generator.h"
#include "tensor.h"

namespace td {

namespace {

[[noreturn]] void mismatch(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& value) {
  throwTypeError(env, what + ": expected " + expected + " but received " + describeJsValue(value));
}

int64_t toInt(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (value.IsBoolean()) return value.As<Napi::Boolean>().Value() ? 1 : 0;
  return int64Arg(env, value, what);
}

double toDouble(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsNumber()) mismatch(env, what, "a number", value);
  return value.As<Napi::Number>().DoubleValue();
}

// JS has one number type; integral values become int Scalars (so int tensors stay int), others double.
c10::Scalar toScalar(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (value.IsBoolean()) return c10::Scalar(value.As<Napi::Boolean>().Value());
  if (value.IsBigInt()) return c10::Scalar(int64Arg(env, value, what));
  if (!value.IsNumber()) mismatch(env, what, "a number", value);
  double d = value.As<Napi::Number>().DoubleValue();
  if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9007199254740992.0) return c10::Scalar(static_cast<int64_t>(d));
  return c10::Scalar(d);
}

// Values whose TorchScript type is not declared (Any, or the elements of an untyped container).
// `nesting` holds the containers being converted, so cycles and runaway depth are Errors.
c10::IValue inferIValue(Napi::Env env, const Napi::Value& value, const std::string& what, InputTensors* inputs, Nesting& nesting) {
  if (value.IsNull() || value.IsUndefined()) return c10::IValue();
  if (value.IsBoolean()) return value.As<Napi::Boolean>().Value();
  if (value.IsNumber()) {
    double d = value.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9223372036854775808.0) return static_cast<int64_t>(d);
    return d;
  }
  if (value.IsString()) return value.As<Napi::String>().Utf8Value();
  if (tensors::IsTensor(env, value)) return toIValue(env, value, c10::TensorType::get(), what, inputs);
  if (value.IsArray()) {
    Nesting::Level level(env, nesting, value, what);
    auto array = value.As<Napi::Array>();
    std::vector<c10::IValue> items;
    for (uint32_t i = 0; i < array.Length(); ++i) items.push_back(inferIValue(env, array.Get(i), what + "[" + std::to_string(i) + "]", inputs, nesting));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (value.IsObject() && !value.IsFunction()) {
    Nesting::Level level(env, nesting, value, what);
    auto object = value.As<Napi::Object>();
    c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
    auto keys = object.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
      dict.insert(key, inferIValue(env, object.Get(key), what + "." + key, inputs, nesting));
    }
    return dict;
  }
  mismatch(env, what, "a Tensor, number, boolean, string, null, array or plain object", value);
}

c10::IValue listToIValue(Napi::Env env, const Napi::Value& value, const c10::ListTypePtr& type, const std::string& what,
                         InputTensors* inputs, c10::optional<int32_t> fixedSize) {
  const auto& elem = type->getElementType();
  // Python lets `int[2] stride` take a single int and repeat it; so do we (libtorch 2.x: `SymInt[2]`).
  if (!value.IsArray()) {
    if (fixedSize && value.IsNumber() && (elem->kind() == c10::TypeKind::IntType || elem->kind() == c10::TypeKind::SymIntType)) {
      return c10::List<int64_t>(std::vector<int64_t>(*fixedSize, toInt(env, value, what)));
    }
    mismatch(env, what, "an array (" + type->str() + ")", value);
  }
  auto array = value.As<Napi::Array>();
  const uint32_t n = array.Length();
  auto item = [&](uint32_t i) { return array.Get(i); };
  auto name = [&](uint32_t i) { return what + "[" + std::to_string(i) + "]"; };
  switch (elem->kind()) {
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType: {
      std::vector<int64_t> v(n);
      for (uint32_t i = 0; i < n; ++i) v[i] = toInt(env, item(i), name(i));
      return c10::List<int64_t>(std::move(v));
    }
    case c10::TypeKind::FloatType: {
      std::vector<double> v(n);
      for (uint32_t i = 0; i < n; ++i) v[i] = toDouble(env, item(i), name(i));
      return c10::List<double>(std::move(v));
    }
    case c10::TypeKind::BoolType: {
      c10::List<bool> v;
      for (uint32_t i = 0; i < n; ++i) {
        if (!item(i).IsBoolean()) mismatch(env, name(i), "a boolean", item(i));
        v.push_back(item(i).As<Napi::Boolean>().Value());
      }
      return v;
    }
    case c10::TypeKind::TensorType: {
      c10::List<at::Tensor> v;
      for (uint32_t i = 0; i < n; ++i) v.push_back(toIValue(env, item(i), elem, name(i), inputs).toTensor());
      return v;
    }
    default: {
      c10::impl::GenericList v(elem);
      for (uint32_t i = 0; i < n; ++i) v.push_back(toIValue(env, item(i), elem, name(i), inputs));
      return v;
    }
  }
}

}  // namespace

c10::IValue toIValue(Napi::Env env, const Napi::Value& value, const c10::TypePtr& type, const std::string& what,
                     InputTensors* inputs, c10::optional<int32_t> fixedListSize) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType: {
      const at::Tensor& t = tensors::From(env, value, what);
      if (inputs) inputs->entries.push_back({t, value.As<Napi::Object>()});
      return t;
    }
    case c10::TypeKind::OptionalType:
      if (value.IsNull() || value.IsUndefined()) return c10::IValue();
      return toIValue(env, value, type->castRaw<c10::OptionalType>()->getElementType(), what, inputs, fixedListSize);
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType:
      // TorchScript methods take dtypes as int: a name ("float16") is accepted there too.
      if (value.IsString()) return static_cast<int64_t>(dtypeFromName(env, value.As<Napi::String>().Utf8Value(), what));
      return toInt(env, value, what);
    case c10::TypeKind::ScalarTypeType:
      // A dtype by name ("float16") or by libtorch's id, which must be one libtorch computes in.
      if (value.IsString()) return static_cast<int64_t>(dtypeFromName(env, value.As<Napi::String>().Utf8Value(), what));
      return static_cast<int64_t>(scalarTypeFromId(env, toInt(env, value, what), what));
    case c10::TypeKind::LayoutType: return layoutId(env, value, what);
    case c10::TypeKind::MemoryFormatType: return memoryFormatId(env, value, what);
    case c10::TypeKind::FloatType: return toDouble(env, value, what);
    case c10::TypeKind::NumberType: return toScalar(env, value, what);
    case c10::TypeKind::BoolType:
      if (!value.IsBoolean()) mismatch(env, what, "a boolean", value);
      return value.As<Napi::Boolean>().Value();
    case c10::TypeKind::StringType:
      if (!value.IsString()) mismatch(env, what, "a string", value);
      return value.As<Napi::String>().Utf8Value();
    case c10::TypeKind::DeviceObjType: return deviceArg(env, value, what);
    case c10::TypeKind::GeneratorType: return GeneratorWrap::From(env, value, what);
    case c10::TypeKind::NoneType:
      if (!value.IsNull() && !value.IsUndefined()) mismatch(env, what, "null", value);
      return c10::IValue();
    case c10::TypeKind::ListType:
      return listToIValue(env, value, type->cast<c10::ListType>(), what, inputs, fixedListSize);
    case c10::TypeKind::TupleType: {
      const auto& elems = type->castRaw<c10::TupleType>()->elements();
      if (!value.IsArray() || value.As<Napi::Array>().Length() != elems.size()) {
        mismatch(env, what, "an array of " + std::to_string(elems.size()) + " (" + type->str() + ")", value);
      }
      auto array = value.As<Napi::Array>();
      std::vector<c10::IValue> items;
      for (uint32_t i = 0; i < elems.size(); ++i) items.push_back(toIValue(env, array.Get(i), elems[i], what + "[" + std::to_string(i) + "]", inputs));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    case c10::TypeKind::DictType: {
      auto dictType = type->cast<c10::DictType>();
      if (!value.IsObject() || value.IsArray() || tensors::IsTensor(env, value)) mismatch(env, what, "a plain object (" + type->str() + ")", value);
      if (dictType->getKeyType()->kind() != c10::TypeKind::StringType) throwTypeError(env, what + ": only Dict[str, T] can be passed from JS, not " + type->str());
      auto object = value.As<Napi::Object>();
      c10::impl::GenericDict dict(dictType->getKeyType(), dictType->getValueType());
      auto keys = object.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
        dict.insert(key, toIValue(env, object.Get(key), dictType->getValueType(), what + "." + key, inputs));
      }
      return dict;
    }
    case c10::TypeKind::UnionType: {
      // Try each member in order; the first that accepts the value wins.
      for (const auto& member : type->castRaw<c10::UnionType>()->containedTypes()) {
        try {
          return toIValue(env, value, member, what, inputs);
        } catch (const Napi::Error&) {
        }
      }
      mismatch(env, what, type->str(), value);
    }
    default: {
      Nesting nesting(what);
      return inferIValue(env, value, what, inputs, nesting);
    }
  }
}

c10::IValue toIValueUntyped(Napi::Env env, const Napi::Value& value, const std::string& what) {
  Nesting nesting(what);
  return inferIValue(env, value, what, nullptr, nesting);
}

namespace {

Napi::Value fromIValueAt(Napi::Env env, const c10::IValue& value, const InputTensors* inputs, int depth) {
  if (depth > kMaxNesting) throwError(env, "a result nested deeper than " + std::to_string(kMaxNesting) + " levels cannot be converted to JS");
  if (value.isTensor()) {
    const auto& t = value.toTensor();
    if (inputs) {
      const Napi::Object input = inputs->objectOf(t);
      if (!input.IsEmpty()) return input;
    }
    return tensors::Wrap(env, t);
  }
  if (value.isNone()) return env.Null();
  if (value.isBool()) return Napi::Boolean::New(env, value.toBool());
  if (value.isInt()) return Napi::Number::New(env, static_cast<double>(value.toInt()));
  if (value.isDouble()) return Napi::Number::New(env, value.toDouble());
  if (value.isString()) return Napi::String::New(env, value.toStringRef());
  if (value.isDevice()) return Napi::String::New(env, value.toDevice().str());
  if (value.isScalar()) {
    auto s = value.toScalar();
    if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
    if (s.isIntegral(false)) return Napi::Number::New(env, static_cast<double>(s.toLong()));
    return Napi::Number::New(env, s.toDouble());
  }
  if (value.isTuple()) {
    const auto& elems = value.toTupleRef().elements();
    auto array = Napi::Array::New(env, elems.size());
    for (size_t i = 0; i < elems.size(); ++i) array.Set(static_cast<uint32_t>(i), fromIValueAt(env, elems[i], inputs, depth + 1));
    return array;
  }
  if (value.isList()) {
    auto list = value.toListRef();
    auto array = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) array.Set(static_cast<uint32_t>(i), fromIValueAt(env, list[i], inputs, depth + 1));
    return array;
  }
  if (value.isGenericDict()) {
    auto object = Napi::Object::New(env);
    for (const auto& entry : value.toGenericDict()) {
      const auto& key = entry.key();
      std::string name = key.isString() ? key.toStringRef() : key.isInt() ? std::to_string(key.toInt()) : key.tagKind();
      object.Set(name, fromIValueAt(env, entry.value(), inputs, depth + 1));
    }
    return object;
  }
  throwTypeError(env, "cannot convert a TorchScript value of kind " + value.tagKind() + " to JS");
}

}  // namespace

Napi::Value fromIValue(Napi::Env env, const c10::IValue& value, const InputTensors* inputs) {
  return fromIValueAt(env, value, inputs, 0);
}

void releaseFlat(c10::IValue value) {
  std::vector<c10::IValue> pending;
  pending.push_back(std::move(value));
  while (!pending.empty()) {
    c10::IValue item = std::move(pending.back());
    pending.pop_back();
    // Move each container's elements onto `pending` and empty it, so freeing it frees one level only.
    if (item.isList()) {
      auto list = item.toList();
      for (size_t i = 0; i < list.size(); ++i) pending.push_back(list.get(i));
      list.clear();
    } else if (item.isTuple()) {
      auto tuple = item.toTuple();
      for (size_t i = 0; i < tuple->elements().size(); ++i) {
        pending.push_back(tuple->elements()[i]);
        tuple->unsafeSetElement(i, c10::IValue());
      }
    } else if (item.isGenericDict()) {
      auto dict = item.toGenericDict();
      for (const auto& entry : dict) pending.push_back(entry.value());
      dict.clear();
    }
  }
}

}  // namespace td
