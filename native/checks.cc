#include "checks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <unordered_set>

namespace td {

namespace {

constexpr double kTwoTo63 = 9223372036854775808.0;

[[noreturn]] void expected(Napi::Env env, const std::string& what, const std::string& kind, const Napi::Value& value) {
  throwTypeError(env, what + ": expected " + kind + " but received " + describeJsValue(value));
}

// The dtypes a schema's ScalarType argument accepts: the ones tensors can hold and ops compute in.
// Quantized, bit-packed and ComplexHalf types are refused: ops given them fail deep in libtorch.
constexpr std::array<c10::ScalarType, 12> kOpDtypes{{
    c10::ScalarType::Byte, c10::ScalarType::Char, c10::ScalarType::Short, c10::ScalarType::Int,
    c10::ScalarType::Long, c10::ScalarType::Half, c10::ScalarType::Float, c10::ScalarType::Double,
    c10::ScalarType::ComplexFloat, c10::ScalarType::ComplexDouble, c10::ScalarType::Bool, c10::ScalarType::BFloat16,
}};

struct NamedId {
  const char* name;
  int64_t id;
};

// Only strided tensors: the addon reads and writes no sparse or MKL-DNN ones.
constexpr std::array<NamedId, 1> kLayouts{{{"strided", static_cast<int64_t>(c10::Layout::Strided)}}};

constexpr std::array<NamedId, 4> kMemoryFormats{{
    {"contiguous_format", static_cast<int64_t>(c10::MemoryFormat::Contiguous)},
    {"preserve_format", static_cast<int64_t>(c10::MemoryFormat::Preserve)},
    {"channels_last", static_cast<int64_t>(c10::MemoryFormat::ChannelsLast)},
    {"channels_last_3d", static_cast<int64_t>(c10::MemoryFormat::ChannelsLast3d)},
}};

template <size_t N>
int64_t namedId(Napi::Env env, const Napi::Value& value, const std::string& what, const char* kind,
                const std::array<NamedId, N>& table) {
  std::string names;
  for (const auto& entry : table) names += (names.empty() ? "" : ", ") + std::to_string(entry.id) + " (\"" + entry.name + "\")";
  const std::string wanted = std::string("a ") + kind + ": " + names;
  if (value.IsString()) {
    const std::string name = value.As<Napi::String>().Utf8Value();
    for (const auto& entry : table) {
      if (name == entry.name) return entry.id;
    }
    expected(env, what, wanted, value);
  }
  if (!value.IsNumber() && !value.IsBigInt() && !value.IsBoolean()) expected(env, what, wanted, value);
  const int64_t id = value.IsBoolean() ? (value.As<Napi::Boolean>().Value() ? 1 : 0) : int64Arg(env, value, what);
  for (const auto& entry : table) {
    if (id == entry.id) return id;
  }
  expected(env, what, wanted, value);
}

}  // namespace

std::string stringArg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) expected(env, what, "a string", value);
  return value.As<Napi::String>().Utf8Value();
}

bool boolArg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsBoolean()) expected(env, what, "a boolean", value);
  return value.As<Napi::Boolean>().Value();
}

int64_t int64Arg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (value.IsBigInt()) {
    bool lossless = false;
    const int64_t v = value.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) expected(env, what, "an int64", value);
    return v;
  }
  if (!value.IsNumber()) expected(env, what, "an integer", value);
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::trunc(d)) expected(env, what, "an integer", value);
  if (d < -kTwoTo63 || d >= kTwoTo63) expected(env, what, "an integer in the int64 range", value);
  return static_cast<int64_t>(d);
}

std::vector<int64_t> shapeArg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsArray()) throwTypeError(env, what + ": expected shape to be an array of integers but received " + describeJsValue(value));
  auto array = value.As<Napi::Array>();
  const uint32_t n = array.Length();
  if (n > 64) throwTypeError(env, what + ": expected a shape of at most 64 dimensions but received " + std::to_string(n));
  std::vector<int64_t> shape(n);
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value dim = array.Get(i);
    const double d = dim.IsNumber() ? dim.As<Napi::Number>().DoubleValue() : -1;
    if (!dim.IsNumber() || !(d >= 0) || d >= kTwoTo63 || d != std::trunc(d)) {
      throwTypeError(env, what + ": expected shape[" + std::to_string(i) + "] to be a non-negative integer but received " + describeJsValue(dim));
    }
    shape[i] = static_cast<int64_t>(d);
  }
  checkedNumel(env, shape, what);
  return shape;
}

c10::Device parseDevice(Napi::Env env, const std::string& text, const std::string& what) {
  c10::optional<c10::Device> device;
  try {
    device = c10::Device(text);
  } catch (const std::exception& e) {
    throwError(env, what + ": " + errorMessage(e));
  }
  if (!device->is_cpu() && !device->is_cuda()) {
    throwError(env, what + ": unsupported device \"" + text + "\" (expected \"cpu\", \"cuda\" or \"cuda:<index>\")");
  }
  return *device;
}

c10::Device deviceArg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) expected(env, what, "a device string such as \"cpu\" or \"cuda:0\"", value);
  return parseDevice(env, value.As<Napi::String>().Utf8Value(), what);
}

c10::ScalarType dtypeArg(Napi::Env env, const Napi::Value& value, const std::string& what) {
  if (!value.IsString()) expected(env, what, "a dtype name such as \"float32\"", value);
  return dtypeFromName(env, value.As<Napi::String>().Utf8Value(), what);
}

bool isOpDtype(c10::ScalarType type) {
  return std::find(kOpDtypes.begin(), kOpDtypes.end(), type) != kOpDtypes.end();
}

c10::ScalarType scalarTypeFromId(Napi::Env env, int64_t id, const std::string& what) {
  // Range first: ScalarType is an int8_t enum.
  if (id >= 0 && id < 64 && isOpDtype(static_cast<c10::ScalarType>(id))) return static_cast<c10::ScalarType>(id);
  throwTypeError(env, what + ": " + std::to_string(id) + " is not a dtype id; give a dtype name such as \"float32\"");
}

int64_t layoutId(Napi::Env env, const Napi::Value& value, const std::string& what) {
  return namedId(env, value, what, "layout", kLayouts);
}

int64_t memoryFormatId(Napi::Env env, const Napi::Value& value, const std::string& what) {
  return namedId(env, value, what, "memory format", kMemoryFormats);
}

int64_t checkedNumel(Napi::Env env, c10::IntArrayRef sizes, const std::string& what) {
  int64_t numel = 1;
  bool empty = false, tooMany = false;
  for (const int64_t d : sizes) {
    if (d < 0) throwError(env, what + ": negative size " + std::to_string(d) + " in " + c10::str(sizes));
    if (d == 0) empty = true;
    else if (tooMany || numel > kMaxElements / d) tooMany = true;
    else numel *= d;
  }
  if (empty) return 0;  // an empty tensor, whatever the other sizes
  if (tooMany) throwError(env, what + ": size " + c10::str(sizes) + " has more than 2^40 elements");
  return numel;
}

Nesting::Level::Level(Napi::Env env, Nesting& nesting, const Napi::Value& container, const std::string& what) : nesting_(nesting) {
  if (nesting.ancestors_.size() >= static_cast<size_t>(kMaxNesting)) {
    throwError(env, nesting.root_ + ": value nested deeper than " + std::to_string(kMaxNesting) + " levels");
  }
  for (const auto& ancestor : nesting.ancestors_) {
    if (ancestor.StrictEquals(container)) throwError(env, nesting.root_ + ": cyclic value at " + what);
  }
  nesting.ancestors_.push_back(container);
}


namespace {

// Ops that crash libtorch (a signal, not an exception) on malformed arguments the checks
// below cannot tell apart; td.op refuses them by name. docs/unchecked-ops.md says why for each.
const std::unordered_set<std::string>& refusedOps() {
  static const std::unordered_set<std::string> names{
      // Internal kernels that trust their caller (autograd, functorch, torch.fft, sparse conversion, ...);
      // the public ops that call them check the arguments first.
      "aten::_adaptive_avg_pool2d_backward",
      "aten::_adaptive_avg_pool3d_backward",
      "aten::_batch_norm_impl_index_backward",
      "aten::_cholesky_solve_helper",
      "aten::_compute_linear_combination",
      "aten::_convert_indices_from_coo_to_csr",
      "aten::_convert_indices_from_csr_to_coo",
      "aten::_fft_c2r",
      "aten::_log_softmax_backward_data",
      "aten::_logcumsumexp",
      "aten::_nested_from_padded",
      "aten::_new_zeros_with_same_feature_meta",
      "aten::_pad_packed_sequence",
      "aten::_pdist_backward",
      "aten::_pdist_forward",
      "aten::_remove_batch_dim",
      "aten::_reshape_alias",
      "aten::_reshape_alias_copy",
      "aten::_saturate_weight_to_fp16",
      "aten::_sobol_engine_initialize_state_",
      "aten::_stack",
      "aten::_symeig_helper",
      "aten::_thnn_differentiable_gru_cell_backward",
      "aten::_thnn_differentiable_lstm_cell_backward",
      "aten::_weight_norm",
      "aten::_weight_norm_interface",
      "aten::_weight_norm_interface_backward",
      "aten::batch_norm_update_stats",
      "aten::choose_qparams_optimized",
      "aten::native_batch_norm",
      "aten::native_channel_shuffle",
      // The 3-D slow convolution divides by the input's channel count (aten::conv3d checks it first).
      "aten::slow_conv3d",
      "aten::slow_conv3d_forward",
      // Backward kernels that index with their inputs' values or shapes unchecked.
      "aten::embedding_backward",
      "aten::embedding_dense_backward",
      "aten::matrix_exp_backward",
      "aten::native_batch_norm_backward",
      "aten::unfold_backward",
      // Named-tensor kernels that read past the dimension list they are given.
      "aten::align_tensors",
      "aten::align_to",
      // The norm of a complex tensor into an `out` of a 1- or 2-byte dtype writes past it (the other overloads are fine).
      "aten::norm.out",
      "aten::norm.dtype_out",
      "aten::norm.names_out",
      "aten::norm.names_dtype_out",
      // Deprecated quantized RNN cell that reads its packed weights unchecked.
      "aten::quantized_lstm_cell",
      // EmbeddingBag reads and writes wherever its indices, offsets and mode point (F.embedding_bag checks them in Python).
      "aten::embedding_bag",
      "aten::_embedding_bag",
      "aten::_embedding_bag_forward_only",
      "quantized::embedding_bag_byte_prepack",
      "quantized::embedding_bag_2bit_prepack",
      "quantized::embedding_bag_4bit_prepack",
  };
  return names;
}

bool isIntList(const c10::TypePtr& type) {
  const auto* list = type->castRaw<c10::ListType>();
  if (!list) {
    const auto* optional = type->castRaw<c10::OptionalType>();
    return optional && isIntList(optional->getElementType());
  }
  const auto kind = list->getElementType()->kind();
  return kind == c10::TypeKind::IntType || kind == c10::TypeKind::SymIntType;
}

}  // namespace

namespace {

// Structural integers: kernel sizes, strides, dilations, group counts and scale factors.
// Kernels divide by them and multiply them together, so they must be positive and small.
bool isStructural(const std::string& name) {
  static const std::unordered_set<std::string> names{"kernel_size", "stride", "dilation", "groups", "upscale_factor", "downscale_factor", "num_heads", "num_layers"};
  return names.count(name) > 0;
}

void checkStructural(Napi::Env env, const std::string& what, int64_t v) {
  if (v < 1 || v > std::numeric_limits<int32_t>::max()) throwError(env, what + ": expected a positive integer below 2^31 but received " + std::to_string(v));
}

// The orthogonal-polynomial kernels (special_chebyshev_polynomial_t, ...) loop n times per element.
constexpr int64_t kMaxPolynomialDegree = 1 << 20;

void checkPolynomialDegree(Napi::Env env, const std::string& what, const c10::IValue& n) {
  double degree = 0;
  if (n.isScalar() || n.isInt() || n.isDouble()) {
    degree = n.toScalar().toDouble();
  } else if (n.isTensor() && n.toTensor().numel() > 0 && !n.toTensor().is_complex()) {
    degree = n.toTensor().to(c10::ScalarType::Double).abs().max().item<double>();
  }
  if (!(std::fabs(degree) <= kMaxPolynomialDegree)) throwError(env, what + ": polynomial degrees up to 2^20 are supported, not " + c10::str(degree));
}

}  // namespace

OpCheckPlan planOpChecks(const std::string& name, const c10::FunctionSchema& schema) {
  OpCheckPlan plan;
  const auto& refused = refusedOps();
  plan.refused = refused.count(schema.name()) > 0 || refused.count(name) > 0;
  plan.readsOne = schema.name() == "aten::_local_scalar_dense" || schema.name() == "aten::item";
  plan.polynomial = schema.name().find("_polynomial_") != std::string::npos;
  const auto& params = schema.arguments();
  plan.hasSelf = !params.empty() && params[0].name() == "self" && params[0].type()->kind() == c10::TypeKind::TensorType;
  for (const auto& param : params) {
    plan.structural.push_back(isStructural(param.name()));
    plan.what.push_back(name + ": argument '" + param.name() + "'");
  }
  return plan;
}

void checkOpCall(Napi::Env env, const std::string& name, const c10::FunctionSchema& schema, const OpCheckPlan& plan, std::vector<c10::IValue>& stack) {
  if (plan.refused) {
    throwError(env, name + ": refused, it crashes libtorch on malformed arguments instead of raising an error (see docs/unchecked-ops.md)");
  }
  const auto& params = schema.arguments();
  const bool hasSelf = plan.hasSelf;
  if (plan.readsOne && stack[0].isTensor()) {
    const auto& t = stack[0].toTensor();
    if (t.numel() != 1) throwError(env, name + ": a Tensor with " + std::to_string(t.numel()) + " elements cannot be converted to a number (shape " + c10::str(t.sizes()) + ")");
  }
  for (size_t i = 0; i < params.size() && i < stack.size(); ++i) {
    const auto& param = params[i];
    const std::string& what = plan.what[i];
    if (plan.polynomial && param.name() == "n") checkPolynomialDegree(env, what, stack[i]);
    if (stack[i].isInt() && plan.structural[i]) checkStructural(env, what, stack[i].toInt());
    // An element offset into a storage (set_, as_strided): offsets past 2^40 overflow the byte count.
    if (stack[i].isInt() && param.name() == "storage_offset" && (stack[i].toInt() < 0 || stack[i].toInt() > kMaxElements)) {
      throwError(env, what + ": expected an offset from 0 to 2^40 but received " + std::to_string(stack[i].toInt()));
    }
    if (!stack[i].isIntList() || !isIntList(param.type())) continue;
    auto values = stack[i].toIntVector();
    // int[N], N > 1: N values; one value stands for all N (as the kernels that check read it); none only
    // where the default is none (max_pool2d's stride=[] means "the kernel size"). Internal kernels index
    // all N unchecked. int[1] only says "a single int is accepted" (fft_fft2's dim=[-2, -1]).
    if (param.N() && *param.N() > 1) {
      const size_t n = static_cast<size_t>(*param.N());
      const auto& fallback = param.default_value();
      const bool noneByDefault = fallback && fallback->isIntList() && fallback->toIntVector().empty();
      if (values.size() == 1 && n > 1) {
        values.assign(n, values[0]);
        stack[i] = c10::List<int64_t>(values);
      }
      if (values.size() != n && !(values.empty() && noneByDefault)) {
        throwError(env, what + ": expected " + std::to_string(n) + " values but received " + c10::str(c10::IntArrayRef(values)));
      }
    }
    if (param.N() && plan.structural[i]) {
      for (const int64_t v : values) checkStructural(env, what, v);
    }
    // Dimensions of self (reductions, fft): within its rank, as PyTorch wraps them (a 0-dim tensor has dims 0 and -1).
    if (param.name() == "dim" && hasSelf && stack[0].isTensor()) {
      const int64_t rank = std::max<int64_t>(stack[0].toTensor().dim(), 1);
      for (const int64_t d : values) {
        if (d < -rank || d >= rank) throwError(env, what + ": dimension " + std::to_string(d) + " is out of range for a tensor of " + std::to_string(stack[0].toTensor().dim()) + " dimensions");
      }
    }
    // histogramdd's bin counts: one positive count per coordinate (the last dimension of self).
    if (param.name() == "bins" && hasSelf && stack[0].isTensor()) {
      const auto& t = stack[0].toTensor();
      if (values.empty() || (t.dim() > 0 && static_cast<int64_t>(values.size()) != t.size(-1))) {
        throwError(env, what + ": expected one bin count per coordinate (" + std::to_string(t.dim() > 0 ? t.size(-1) : 0) + ") but received " + c10::str(c10::IntArrayRef(values)));
      }
      for (const int64_t v : values) checkStructural(env, what, v);
    }
    // Sizes of a tensor the op creates or views: -1 ("infer") only where there is a self to infer from.
    if (param.name() == "size" || param.name() == "shape") {
      std::vector<int64_t> sizes;
      for (const int64_t d : values) {
        if (d == -1 && hasSelf) continue;
        sizes.push_back(d);
      }
      checkedNumel(env, sizes, what);
    }
  }
}

}  // namespace td
