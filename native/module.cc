#include "module.h"

#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/serialize.h>

#include <fstream>
#include <sstream>

#include "addon_data.h"
#include "checks.h"
#include "convert.h"
#include "executor.h"
#include "runtime.h"
#include "tensor.h"

namespace td {

namespace {

thread_local torch::jit::Module* pendingModule = nullptr;

// On the executor thread. The graph executor's optimization switch is thread-local: the caller
// decides it (graphOptimizationFor, runtime.h) from its grad mode, which the executor carries over.
c10::IValue callMethod(torch::jit::Module& module, const std::string& method, std::vector<c10::IValue> args,
                       const std::unordered_map<std::string, c10::IValue>& kwargs, bool graphOptimize) {
  torch::jit::GraphOptimizerEnabledGuard optimize(graphOptimize);
  return module.get_method(method)(std::move(args), kwargs);
}

// Runs one TorchScript method on the executor thread (executor.h). Holds only libtorch values, never JS ones.
class MethodTask : public ExecutorTask {
 public:
  MethodTask(Napi::Env env, torch::jit::Module module, std::string method, std::vector<c10::IValue> args,
             std::unordered_map<std::string, c10::IValue> kwargs)
      : ExecutorTask(env),
        module_(std::move(module)),
        method_(std::move(method)),
        args_(std::move(args)),
        kwargs_(std::move(kwargs)),
        graphOptimize_(graphOptimizationFor(at::GradMode::is_enabled())) {}

  void Execute() override {
    try {
      result_ = callMethod(module_, method_, std::move(args_), kwargs_, graphOptimize_);
    } catch (const std::exception& e) {
      SetError("Module." + method_ + ": " + errorMessage(e));
    }
  }

  Napi::Value Result(Napi::Env env) override {
    const c10::IValue result = std::move(result_);
    result_ = c10::IValue();
    return fromIValue(env, result);
  }

 private:
  torch::jit::Module module_;
  std::string method_;
  std::vector<c10::IValue> args_;
  std::unordered_map<std::string, c10::IValue> kwargs_;
  bool graphOptimize_;
  c10::IValue result_;
};

// Runs one method on several argument lists at once, each on its own thread (executor.h,
// runConcurrently): the pieces of a split batch. Results come back as an array, in order.
class ParallelMethodTask : public ExecutorTask {
 public:
  ParallelMethodTask(Napi::Env env, torch::jit::Module module, std::string method, std::vector<std::vector<c10::IValue>> argLists)
      : ExecutorTask(env),
        module_(std::move(module)),
        method_(std::move(method)),
        argLists_(std::move(argLists)),
        results_(argLists_.size()),
        graphOptimize_(graphOptimizationFor(at::GradMode::is_enabled())) {}

  void Execute() override {
    std::vector<std::function<void()>> pieces;
    for (size_t i = 0; i < argLists_.size(); ++i) {
      pieces.emplace_back([this, i] { results_[i] = callMethod(module_, method_, std::move(argLists_[i]), {}, graphOptimize_); });
    }
    try {
      runConcurrently(pieces);
    } catch (const std::exception& e) {
      SetError("Module." + method_ + ": " + errorMessage(e));
    }
  }

  Napi::Value Result(Napi::Env env) override {
    std::vector<c10::IValue> results = std::move(results_);
    auto array = Napi::Array::New(env, results.size());
    for (size_t i = 0; i < results.size(); ++i) array.Set(static_cast<uint32_t>(i), fromIValue(env, results[i]));
    return array;
  }

 private:
  torch::jit::Module module_;
  std::string method_;
  std::vector<std::vector<c10::IValue>> argLists_;
  std::vector<c10::IValue> results_;
  bool graphOptimize_;
};

torch::jit::Module submoduleFor(Napi::Env env, torch::jit::Module root, const std::string& dotted, std::string& leaf) {
  size_t start = 0;
  for (size_t dot; (dot = dotted.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = dotted.substr(start, dot - start);
    auto child = root.attr(part, c10::IValue());
    if (!child.isModule()) throwError(env, "Module.setParameter: \"" + dotted + "\" has no submodule \"" + part + "\"");
    root = child.toModule();
  }
  leaf = dotted.substr(start);
  return root;
}

// run()/runAsync() name the method; omitted means forward.
std::string methodName(Napi::Env env, const Napi::Value& value, const std::string& where) {
  if (value.IsUndefined()) return "forward";
  return stringArg(env, value, where + ": method name");
}

template <class List>
Napi::Object namedTensors(Napi::Env env, const List& list) {
  auto result = Napi::Object::New(env);
  for (const auto& item : list) result.Set(item.name, tensors::Wrap(env, item.value));
  return result;
}

}  // namespace

Napi::Function ModuleWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeModule",
                     {
                         InstanceMethod<&ModuleWrap::Run>("run"),
                         InstanceMethod<&ModuleWrap::RunAsync>("runAsync"),
                         InstanceMethod<&ModuleWrap::RunConcurrentlyAsync>("runConcurrentlyAsync"),
                         InstanceMethod<&ModuleWrap::MethodNames>("methodNames"),
                         InstanceMethod<&ModuleWrap::MethodSchema>("methodSchema"),
                         InstanceMethod<&ModuleWrap::NamedParameters>("namedParameters"),
                         InstanceMethod<&ModuleWrap::NamedBuffers>("namedBuffers"),
                         InstanceMethod<&ModuleWrap::NamedModules>("namedModules"),
                         InstanceMethod<&ModuleWrap::Train>("train"),
                         InstanceAccessor<&ModuleWrap::IsTraining>("training"),
                         InstanceMethod<&ModuleWrap::To>("to"),
                         InstanceMethod<&ModuleWrap::Save>("save"),
                         InstanceMethod<&ModuleWrap::SaveToBuffer>("saveToBuffer"),
                         InstanceMethod<&ModuleWrap::SetAttribute>("setAttribute"),
                         InstanceMethod<&ModuleWrap::Clone>("clone"),
                         InstanceMethod<&ModuleWrap::Attribute>("attribute"),
                         InstanceMethod<&ModuleWrap::Dispose>("dispose"),
                         InstanceAccessor<&ModuleWrap::IsDisposed>("isDisposed"),
                     });
}

ModuleWrap::ModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleWrap>(info) {
  if (!pendingModule) throwTypeError(info.Env(), "Module: modules are created by load(), not with new");
  module_ = *pendingModule;
  pendingModule = nullptr;
}

torch::jit::Module& ModuleWrap::live(Napi::Env env) {
  if (!module_) throwError(env, "Module: used after dispose()");
  return *module_;
}

Napi::Value ModuleWrap::Dispose(const Napi::CallbackInfo& info) {
  module_.reset();  // async calls in flight hold their own reference and finish normally
  return info.Env().Undefined();
}

Napi::Value ModuleWrap::IsDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !module_); }

Napi::Value ModuleWrap::Wrap(Napi::Env env, torch::jit::Module module) {
  pendingModule = &module;
  try {
    return addonData(env).moduleClass.New({});
  } catch (...) {
    pendingModule = nullptr;
    throw;
  }
}

std::vector<c10::IValue> ModuleWrap::convertArguments(Napi::Env env, const std::string& method, const Napi::Value& positionalValue,
                                                      const Napi::Value& keywordValue, std::unordered_map<std::string, c10::IValue>& kwargs) {
  const std::string where = "Module." + method;
  auto found = live(env).find_method(method);
  if (!found) {
    std::string names;
    for (const auto& m : live(env).get_methods()) names += (names.empty() ? "" : ", ") + m.name();
    throwError(env, where + ": the module has no method \"" + method + "\" (methods: " + names + ")");
  }
  const auto& params = found->function().getSchema().arguments();  // params[0] is self
  if (!positionalValue.IsArray()) throwTypeError(env, where + ": expected the arguments as an array but received " + describeJsValue(positionalValue));
  if (!keywordValue.IsUndefined() && !keywordValue.IsNull() && !keywordValue.IsObject()) {
    throwTypeError(env, where + ": expected keyword arguments as an object but received " + describeJsValue(keywordValue));
  }
  auto positional = positionalValue.As<Napi::Array>();
  if (positional.Length() + 1 > params.size()) {
    throwError(env, where + ": expected at most " + std::to_string(params.size() - 1) + " arguments but received " +
                        std::to_string(positional.Length()) + "; schema: " + c10::toString(found->function().getSchema()));
  }
  std::vector<c10::IValue> args;
  for (uint32_t i = 0; i < positional.Length(); ++i) {
    const auto& param = params[i + 1];
    args.push_back(toIValue(env, positional.Get(i), param.type(), where + ": argument '" + param.name() + "'"));
  }
  if (keywordValue.IsObject()) {
    auto object = keywordValue.As<Napi::Object>();
    auto keys = object.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).As<Napi::String>().Utf8Value();
      auto it = std::find_if(params.begin() + 1, params.end(), [&](const c10::Argument& a) { return a.name() == key; });
      if (it == params.end()) throwError(env, where + ": unknown keyword argument '" + key + "'; schema: " + c10::toString(found->function().getSchema()));
      Napi::Value value = object.Get(key);
      if (value.IsUndefined()) continue;
      kwargs[key] = toIValue(env, value, it->type(), where + ": argument '" + key + "'");
    }
  }
  return args;
}

Napi::Value ModuleWrap::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = methodName(env, info[0], "Module.run");
  std::unordered_map<std::string, c10::IValue> kwargs;
  auto args = convertArguments(env, method, info[1], info[2], kwargs);
  auto& module = live(env);
  const bool graphOptimize = graphOptimizationFor(at::GradMode::is_enabled());
  auto result = guarded(env, "Module." + method, [&] {
    c10::IValue out;
    runOnExecutorAndWait([&] { out = callMethod(module, method, std::move(args), kwargs, graphOptimize); });
    return out;
  });
  return fromIValue(env, result);
}

Napi::Value ModuleWrap::RunAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = methodName(env, info[0], "Module.runAsync");
  std::unordered_map<std::string, c10::IValue> kwargs;
  auto args = convertArguments(env, method, info[1], info[2], kwargs);
  return runOnExecutor(env, new MethodTask(env, live(info.Env()), method, std::move(args), std::move(kwargs)));
}

Napi::Value ModuleWrap::RunConcurrentlyAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = stringArg(env, info[0], "Module.runConcurrentlyAsync: method name");
  if (!info[1].IsArray() || info[1].As<Napi::Array>().Length() == 0) {
    throwTypeError(env, "Module.runConcurrentlyAsync: expected a non-empty array of argument arrays but received " + describeJsValue(info[1]));
  }
  auto lists = info[1].As<Napi::Array>();
  std::vector<std::vector<c10::IValue>> argLists;
  for (uint32_t i = 0; i < lists.Length(); ++i) {
    std::unordered_map<std::string, c10::IValue> none;
    argLists.push_back(convertArguments(env, method, lists.Get(i), env.Undefined(), none));
  }
  return runOnExecutor(env, new ParallelMethodTask(env, live(env), method, std::move(argLists)));
}

Napi::Value ModuleWrap::MethodNames(const Napi::CallbackInfo& info) {
  auto methods = live(info.Env()).get_methods();
  auto names = Napi::Array::New(info.Env(), methods.size());
  for (size_t i = 0; i < methods.size(); ++i) names.Set(static_cast<uint32_t>(i), Napi::String::New(info.Env(), methods[i].name()));
  return names;
}

Napi::Value ModuleWrap::MethodSchema(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string method = stringArg(env, info[0], "Module.methodSchema: method name");
  auto found = live(info.Env()).find_method(method);
  if (!found) throwError(env, "Module.methodSchema: the module has no method \"" + method + "\"");
  return Napi::String::New(env, c10::toString(found->function().getSchema()));
}

Napi::Value ModuleWrap::NamedParameters(const Napi::CallbackInfo& info) {
  const bool recurse = info.Length() == 0 || !info[0].IsBoolean() || info[0].As<Napi::Boolean>().Value();
  return namedTensors(info.Env(), live(info.Env()).named_parameters(recurse));
}

Napi::Value ModuleWrap::NamedBuffers(const Napi::CallbackInfo& info) {
  const bool recurse = info.Length() == 0 || !info[0].IsBoolean() || info[0].As<Napi::Boolean>().Value();
  return namedTensors(info.Env(), live(info.Env()).named_buffers(recurse));
}

Napi::Value ModuleWrap::NamedModules(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& item : live(info.Env()).named_modules()) names.Set(i++, Napi::String::New(env, item.name));
  return names;
}

Napi::Value ModuleWrap::Train(const Napi::CallbackInfo& info) {
  const bool on = info.Length() == 0 || !info[0].IsBoolean() || info[0].As<Napi::Boolean>().Value();
  live(info.Env()).train(on);
  return info.This();
}

Napi::Value ModuleWrap::IsTraining(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), live(info.Env()).is_training());
}

// to(device: string | null, dtype: string | null)
Napi::Value ModuleWrap::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto absent = [](const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); };
  c10::optional<c10::Device> device;
  c10::optional<c10::ScalarType> dtype;
  if (!absent(info[0])) device = deviceArg(env, info[0], "Module.to: device");
  if (!absent(info[1])) dtype = dtypeArg(env, info[1], "Module.to: dtype");
  auto& module = live(env);
  guarded(env, "Module.to", [&] {
    if (device && dtype) {
      module.to(*device, *dtype);
    } else if (device) {
      module.to(*device);
    } else if (dtype) {
      module.to(*dtype);
    }
  });
  return info.This();
}

Napi::Value ModuleWrap::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throwTypeError(env, "Module.save: expected a file path");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  auto& module = live(env);
  guarded(env, "Module.save(\"" + path + "\")", [&] { module.save(path); });
  return env.Undefined();
}

Napi::Value ModuleWrap::SaveToBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::ostringstream out;
  auto& module = live(env);
  guarded(env, "Module.saveToBuffer", [&] { module.save(out); });
  const std::string bytes = out.str();
  return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
}

Napi::Value ModuleWrap::SetAttribute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[2].IsString()) throwTypeError(env, "Module.setAttribute: expected (name, tensor, kind)");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const std::string kind = info[2].As<Napi::String>().Utf8Value();
  if (kind != "parameter" && kind != "buffer") throwTypeError(env, "Module.setAttribute: expected kind \"parameter\" or \"buffer\" but received \"" + kind + "\"");
  const auto& value = tensors::From(env, info[1], "Module.setAttribute(\"" + name + "\")");
  std::string leaf;
  auto owner = submoduleFor(env, live(info.Env()), name, leaf);
  guarded(env, "Module.setAttribute(\"" + name + "\")", [&] {
    owner.register_parameter(leaf, value, /*is_buffer=*/kind == "buffer");
  });
  return env.Undefined();
}

Napi::Value ModuleWrap::Clone(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& module = live(env);
  return Wrap(env, guarded(env, "Module.clone", [&] {
    // Copy without recording autograd history, so the copy's parameters are leaves of their
    // own; then give them the originals' requires_grad.
    torch::jit::Module copy;
    {
      at::NoGradGuard noGrad;
      copy = module.deepcopy();
    }
    auto originals = module.named_parameters();
    auto copies = copy.named_parameters();
    for (auto o = originals.begin(), c = copies.begin(); o != originals.end() && c != copies.end(); ++o, ++c) {
      (*c).value.set_requires_grad((*o).value.requires_grad());
    }
    return copy;
  }));
}

// attribute(dottedName) -> the value of a module attribute (parameter, buffer, constant or submodule name list).
Napi::Value ModuleWrap::Attribute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = stringArg(env, info[0], "Module.attribute: name");
  std::string leaf;
  auto owner = submoduleFor(env, live(info.Env()), name, leaf);
  if (!owner.hasattr(leaf)) throwError(env, "Module.attribute: the module has no attribute \"" + name + "\"");
  auto value = owner.attr(leaf);
  if (value.isModule()) return Napi::String::New(env, "<module " + name + ">");
  return fromIValue(env, value);
}

Napi::Value LoadModule(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  c10::optional<c10::Device> device;
  if (!info[1].IsUndefined() && !info[1].IsNull()) device = deviceArg(env, info[1], "load: device");
  if (info.Length() > 0 && info[0].IsBuffer()) {
    auto buffer = info[0].As<Napi::Buffer<char>>();
    std::istringstream in(std::string(buffer.Data(), buffer.Length()));
    return ModuleWrap::Wrap(env, guarded(env, "load(<Buffer of " + std::to_string(buffer.Length()) + " bytes>)", [&] {
                  try {
                    return torch::jit::load(in, device);
                  } catch (const c10::Error& e) {
                    throw std::runtime_error(std::string("not a TorchScript archive or truncated: ") + e.what_without_backtrace());
                  }
                }));
  }
  if (info.Length() < 1 || !info[0].IsString()) throwTypeError(env, "load: expected a file path or a Buffer but received " + describeJsValue(info[0]));
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  if (!std::ifstream(path).good()) throwError(env, "load(\"" + path + "\"): no such file or it cannot be read");
  return ModuleWrap::Wrap(env, guarded(env, "load(\"" + path + "\")", [&] {
                try {
                  return torch::jit::load(path, device);
                } catch (const c10::Error& e) {
                  throw std::runtime_error(std::string("not a TorchScript file or truncated: ") + e.what_without_backtrace());
                }
              }));
}

}  // namespace td
