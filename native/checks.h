// The argument checks every Node-API entry point shares: nothing a caller passes may crash
// the process. Readers throw a TypeError naming the argument ("what") before any conversion;
// libtorch enum values given as integers are range-checked; the generic op path checks the
// shapes of malformed calls libtorch does not check itself (docs/unchecked-ops.md).
#pragma once

#include <vector>

#include "common.h"

namespace td {

// Containers nested deeper than this are refused by the converters (JS -> IValue and back).
constexpr int kMaxNesting = 1000;
// Refused before allocation: sizes whose product exceeds this many elements (2^40).
constexpr int64_t kMaxElements = int64_t{1} << 40;

// ---- typed readers: a TypeError "what: expected ... but received ..." for any other type ----
std::string stringArg(Napi::Env env, const Napi::Value& value, const std::string& what);
bool boolArg(Napi::Env env, const Napi::Value& value, const std::string& what);
// An integral JS number (or BigInt) that fits in int64.
int64_t int64Arg(Napi::Env env, const Napi::Value& value, const std::string& what);
// A JS array of non-negative integers; its element count must stay within kMaxElements.
std::vector<int64_t> shapeArg(Napi::Env env, const Napi::Value& value, const std::string& what);
// "cpu", "cuda", "cuda:1": parsed by c10 with its errors caught; other device types are refused.
c10::Device deviceArg(Napi::Env env, const Napi::Value& value, const std::string& what);
c10::Device parseDevice(Napi::Env env, const std::string& text, const std::string& what);
// A dtype by name ("float16") as the JS API spells it.
c10::ScalarType dtypeArg(Napi::Env env, const Napi::Value& value, const std::string& what);

// ---- libtorch enums given as integers or names, where a schema declares ScalarType, Layout, MemoryFormat ----
c10::ScalarType scalarTypeFromId(Napi::Env env, int64_t id, const std::string& what);
// Whether ops take `type` as a dtype (the kinds scalarTypeFromId accepts).
bool isOpDtype(c10::ScalarType type);
int64_t layoutId(Napi::Env env, const Napi::Value& value, const std::string& what);
int64_t memoryFormatId(Napi::Env env, const Napi::Value& value, const std::string& what);

// Elements of a tensor of `sizes`, refusing negative sizes and products past kMaxElements.
int64_t checkedNumel(Napi::Env env, c10::IntArrayRef sizes, const std::string& what);

// Tracks the containers a converter is inside of, so a value that contains itself or nests
// past kMaxNesting is an Error rather than a stack overflow.
class Nesting {
 public:
  explicit Nesting(std::string root) : root_(std::move(root)) {}
  // RAII: one level of nesting for the duration of a container's conversion.
  class Level {
   public:
    Level(Napi::Env env, Nesting& nesting, const Napi::Value& container, const std::string& what);
    ~Level() { nesting_.ancestors_.pop_back(); }
    Level(const Level&) = delete;
    Level& operator=(const Level&) = delete;

   private:
    Nesting& nesting_;
  };

 private:
  std::string root_;
  std::vector<Napi::Value> ancestors_;
};

// What checkOpCall needs to know of an op, worked out once when the op is resolved: a small op's
// call used to spend a microsecond hashing and concatenating names.
struct OpCheckPlan {
  bool refused = false;     // known to crash libtorch on malformed arguments
  bool readsOne = false;    // item / _local_scalar_dense: reads one element unchecked
  bool polynomial = false;  // the orthogonal-polynomial kernels, which loop n times per element
  bool hasSelf = false;     // a Tensor `self` first, whose rank bounds `dim`
  std::vector<bool> structural;  // per argument: kernel sizes, strides, groups, ...
  std::vector<std::string> what;  // per argument: "aten::x: argument 'y'", for messages
};
OpCheckPlan planOpChecks(const std::string& name, const c10::FunctionSchema& schema);

// Checks an op call whose arguments are converted, before dispatch: known-crashing ops are
// refused by name; one-element reads, sizes, int[N] lengths and kernel/stride/group values are
// checked (see docs/unchecked-ops.md). A one-value int[N] is widened to N values in `stack`.
void checkOpCall(Napi::Env env, const std::string& name, const c10::FunctionSchema& schema, const OpCheckPlan& plan, std::vector<c10::IValue>& stack);

}  // namespace td
