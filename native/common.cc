#include "common.h"

#include <array>
#include <sstream>

namespace td {

namespace {

struct DtypeEntry {
  const char* name;
  c10::ScalarType type;
};

// The dtypes the JS API speaks; anything else read back from libtorch is reported by c10's name.
constexpr std::array<DtypeEntry, 11> kDtypes{{
    {"float32", c10::ScalarType::Float},
    {"float16", c10::ScalarType::Half},
    {"bfloat16", c10::ScalarType::BFloat16},
    {"float64", c10::ScalarType::Double},
    {"int64", c10::ScalarType::Long},
    {"int32", c10::ScalarType::Int},
    {"int16", c10::ScalarType::Short},
    {"int8", c10::ScalarType::Char},
    {"uint8", c10::ScalarType::Byte},
    {"bool", c10::ScalarType::Bool},
    {"complex64", c10::ScalarType::ComplexFloat},
}};

}  // namespace

std::string describeJsValue(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return std::string("boolean ") + (value.As<Napi::Boolean>().Value() ? "true" : "false");
    case napi_number: {
      std::ostringstream s;
      s << "number " << value.As<Napi::Number>().DoubleValue();
      return s.str();
    }
    case napi_string: return "string \"" + value.As<Napi::String>().Utf8Value() + "\"";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_bigint: return "bigint";
    case napi_external: return "external";
    case napi_object:
      if (value.IsArray()) return "array";
      if (value.IsTypedArray()) return "TypedArray";
      return "object";
  }
  return "unknown";
}

const char* dtypeName(c10::ScalarType type) {
  for (const auto& entry : kDtypes) {
    if (entry.type == type) return entry.name;
  }
  return c10::toString(type);
}

c10::ScalarType dtypeFromName(Napi::Env env, const std::string& name, const std::string& where) {
  for (const auto& entry : kDtypes) {
    if (name == entry.name) return entry.type;
  }
  throwTypeError(env, where + ": unknown dtype \"" + name +
                          "\" (expected float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8 or bool)");
}

Napi::Object DtypeIds(Napi::Env env) {
  auto ids = Napi::Object::New(env);
  for (const auto& entry : kDtypes) ids.Set(entry.name, Napi::Number::New(env, static_cast<double>(entry.type)));
  return ids;
}

std::string describeTensor(const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  // A nested tensor's ragged dimensions have no size (t.size(i) throws).
  if (t.is_nested()) return std::string("nested ") + dtypeName(t.scalar_type()) + " " + t.device().str();
  std::ostringstream s;
  s << "[";
  for (int64_t i = 0; i < t.dim(); ++i) s << (i ? ", " : "") << t.size(i);
  s << "] " << dtypeName(t.scalar_type()) << " " << t.device().str();
  return s.str();
}

}  // namespace td
