#include "distributed.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#ifdef TD_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef TD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "checks.h"
#include "tensor.h"

namespace td {

// libtorch 2.x split the process group into a dispatching ProcessGroup and per-device Backends;
// ProcessGroupGloo / ProcessGroupNCCL became Backends there. Both expose the same collectives.
#if TORCH_VERSION_MAJOR >= 2
using Collectives = c10d::Backend;
#else
using Collectives = c10d::ProcessGroup;
#endif

struct GroupState {
  int rank = 0;
  int size = 1;
  std::string backend;
  c10::Device device{c10::kCPU};
  std::chrono::milliseconds timeout{60000};
  c10::intrusive_ptr<Collectives> group;  // null once destroyed

  // Calls run in the order they were issued: ticket n waits until `served` reaches n.
  std::mutex mutex;
  std::condition_variable turn;
  uint64_t issued = 0;
  uint64_t served = 0;
};

namespace {

thread_local std::shared_ptr<GroupState>* pendingState = nullptr;

// Holds the group's turn for one call: waits for its ticket, passes the turn on when done
// (also when the call failed), so one failed call never stalls those after it.
class InTurn {
 public:
  InTurn(GroupState& state, uint64_t ticket) : state_(state) {
    std::unique_lock<std::mutex> lock(state_.mutex);
    state_.turn.wait(lock, [&] { return state_.served == ticket; });
  }
  ~InTurn() {
    {
      std::lock_guard<std::mutex> lock(state_.mutex);
      ++state_.served;
    }
    state_.turn.notify_all();
  }
  InTurn(const InTurn&) = delete;
  InTurn& operator=(const InTurn&) = delete;

 private:
  GroupState& state_;
};

// One contiguous buffer per dtype on the group's device, so a list of tensors costs one
// collective per dtype. A lone contiguous tensor already there is used in place.
struct Bucket {
  at::Tensor flat;
  std::vector<size_t> members;
};

std::vector<Bucket> bucketsOf(const std::vector<at::Tensor>& tensors, c10::Device device) {
  std::vector<Bucket> buckets;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto same = [&](const Bucket& b) { return tensors[b.members[0]].scalar_type() == tensors[i].scalar_type(); };
    auto it = std::find_if(buckets.begin(), buckets.end(), same);
    if (it == buckets.end()) {
      buckets.push_back({});
      it = buckets.end() - 1;
    }
    it->members.push_back(i);
  }
  for (auto& b : buckets) {
    const auto& first = tensors[b.members[0]];
    if (b.members.size() == 1 && first.is_contiguous() && first.device() == device) {
      b.flat = first;
      continue;
    }
    std::vector<at::Tensor> parts;
    parts.reserve(b.members.size());
    for (size_t m : b.members) parts.push_back(tensors[m].reshape({-1}).to(device));
    b.flat = at::cat(parts);
  }
  return buckets;
}

// Copies a bucket's values back into its tensors (nothing to do for one used in place).
void scatterBack(const Bucket& b, std::vector<at::Tensor>& tensors) {
  int64_t offset = 0;
  for (size_t m : b.members) {
    auto& t = tensors[m];
    if (b.flat.is_same(t)) return;
    const int64_t n = t.numel();
    t.copy_(b.flat.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

// Issues one collective per bucket (`issue` makes it from a one-tensor list), then waits for all.
template <typename Issue>
void runPerBucket(std::vector<Bucket>& buckets, std::chrono::milliseconds timeout, Issue issue) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& b : buckets) {
    std::vector<at::Tensor> one{b.flat};
    works.push_back(issue(one));
  }
  for (auto& work : works) work->wait(timeout);
}

// The async shape of every call on a group: takes its ticket on the JS thread (issue order),
// runs in turn on libuv's pool without touching JS values, resolves in OnOK.
class GroupWorker : public Napi::AsyncWorker {
 public:
  GroupWorker(Napi::Env env, std::shared_ptr<GroupState> state, std::string what)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), state_(std::move(state)), what_(std::move(what)) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    ticket_ = state_->issued++;
  }

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    InTurn turn(*state_, ticket_);
    try {
      // Bucket copies stay on this libuv thread's one core: a second OpenMP team beside the
      // executor's would slow both (executor.h).
      if (at::get_num_threads() != 1) at::set_num_threads(1);
      at::NoGradGuard noGrad;  // in-place writes into parameters (leaves that require grad)
      run(*state_);
    } catch (const std::exception& e) {
      SetError(what_ + " (rank " + std::to_string(state_->rank) + " of " + std::to_string(state_->size) + "): " + errorMessage(e));
    }
  }

  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 protected:
  virtual void run(GroupState& state) = 0;

  static Collectives& groupOf(GroupState& state) {
    if (!state.group) throw std::runtime_error("the process group was destroyed");
    return *state.group;
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<GroupState> state_;
  std::string what_;
  uint64_t ticket_ = 0;
};

class AllReduceWorker : public GroupWorker {
 public:
  AllReduceWorker(Napi::Env env, std::shared_ptr<GroupState> state, std::vector<at::Tensor> tensors, c10d::ReduceOp::RedOpType op, bool average)
      : GroupWorker(env, std::move(state), "ProcessGroup.allReduce"), tensors_(std::move(tensors)), op_(op), average_(average) {}

 protected:
  void run(GroupState& state) override {
    auto& group = groupOf(state);
    auto buckets = bucketsOf(tensors_, state.device);
    runPerBucket(buckets, state.timeout, [&](std::vector<at::Tensor>& one) {
      c10d::AllreduceOptions options;
      options.reduceOp = op_;
      options.timeout = state.timeout;
      return group.allreduce(one, options);
    });
    for (auto& b : buckets) {
      if (average_) b.flat.div_(state.size);  // Gloo has no AVG: sum, then divide
      scatterBack(b, tensors_);
    }
    tensors_.clear();
  }

 private:
  std::vector<at::Tensor> tensors_;
  c10d::ReduceOp::RedOpType op_;
  bool average_;
};

class BroadcastWorker : public GroupWorker {
 public:
  BroadcastWorker(Napi::Env env, std::shared_ptr<GroupState> state, std::vector<at::Tensor> tensors, int root)
      : GroupWorker(env, std::move(state), "ProcessGroup.broadcast"), tensors_(std::move(tensors)), root_(root) {}

 protected:
  void run(GroupState& state) override {
    auto& group = groupOf(state);
    auto buckets = bucketsOf(tensors_, state.device);
    runPerBucket(buckets, state.timeout, [&](std::vector<at::Tensor>& one) {
      c10d::BroadcastOptions options;
      options.rootRank = root_;
      options.timeout = state.timeout;
      return group.broadcast(one, options);
    });
    if (state.rank != root_) {
      for (auto& b : buckets) scatterBack(b, tensors_);
    }
    tensors_.clear();
  }

 private:
  std::vector<at::Tensor> tensors_;
  int root_;
};

class BarrierWorker : public GroupWorker {
 public:
  BarrierWorker(Napi::Env env, std::shared_ptr<GroupState> state) : GroupWorker(env, std::move(state), "ProcessGroup.barrier") {}

 protected:
  void run(GroupState& state) override {
    c10d::BarrierOptions options;
    options.timeout = state.timeout;
    if (state.device.is_cuda()) options.device_ids = {state.device.index()};
    groupOf(state).barrier(options)->wait(state.timeout);
  }
};

class DestroyWorker : public GroupWorker {
 public:
  DestroyWorker(Napi::Env env, std::shared_ptr<GroupState> state) : GroupWorker(env, std::move(state), "ProcessGroup.destroy") {}

 protected:
  // The group's destructor joins its threads and closes its sockets: off the event loop.
  void run(GroupState& state) override { state.group.reset(); }
};

struct RendezvousOptions {
  int rank = 0;
  int size = 1;
  std::string masterAddr;
  uint16_t masterPort = 0;
  std::chrono::milliseconds timeout{60000};
  bool isServer = false;
  std::string storePrefix;
  std::string backend;
  c10::Device device{c10::kCPU};
  std::string glooInterface;
  std::string glooHostname;
};

// The rendezvous: a TCPStore (rank 0 serves it, unless a launcher's agent does), then the
// backend's own connection setup, which needs every rank and so blocks until all have come.
class InitWorker : public Napi::AsyncWorker {
 public:
  InitWorker(Napi::Env env, const Napi::FunctionReference& cls, RendezvousOptions options)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), cls_(cls), options_(std::move(options)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    const auto& o = options_;
    try {
      c10d::TCPStoreOptions storeOptions;
      storeOptions.port = o.masterPort;
      storeOptions.isServer = o.isServer;
      storeOptions.numWorkers = static_cast<size_t>(o.size);
      storeOptions.waitWorkers = true;
      storeOptions.timeout = o.timeout;
      storeOptions.multiTenant = o.isServer;
      auto tcp = c10::make_intrusive<c10d::TCPStore>(o.masterAddr, storeOptions);
      c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(o.storePrefix, tcp);
      auto state = std::make_shared<GroupState>();
      state->rank = o.rank;
      state->size = o.size;
      state->backend = o.backend;
      state->device = o.device;
      state->timeout = o.timeout;
      if (o.backend == "gloo") {
#ifdef TD_WITH_GLOO
        auto gloo = c10d::ProcessGroupGloo::Options::create(o.timeout);
        gloo->devices.push_back(!o.glooInterface.empty()  ? c10d::ProcessGroupGloo::createDeviceForInterface(o.glooInterface)
                                : !o.glooHostname.empty() ? c10d::ProcessGroupGloo::createDeviceForHostname(o.glooHostname)
                                                          : c10d::ProcessGroupGloo::createDefaultDevice());
        gloo->threads = 2;  // torch.distributed's default: two per device
        state->group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.size, gloo);
#endif
      } else {
#ifdef TD_WITH_NCCL
        auto nccl = c10d::ProcessGroupNCCL::Options::create();
        nccl->timeout = o.timeout;
        state->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.size, nccl);
#endif
      }
      if (!state->group) throw std::runtime_error("this build of torch-diffusion has no " + o.backend + " backend");
      state_ = std::move(state);
    } catch (const std::exception& e) {
      SetError("initProcessGroup (rank " + std::to_string(o.rank) + " of " + std::to_string(o.size) + ", " + o.backend + " at " + o.masterAddr + ":" +
               std::to_string(o.masterPort) + "): " + errorMessage(e));
    }
  }

  void OnOK() override {
    try {
      deferred_.Resolve(ProcessGroupWrap::Wrap(Env(), cls_, std::move(state_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const Napi::FunctionReference& cls_;
  RendezvousOptions options_;
  std::shared_ptr<GroupState> state_;
};

std::vector<std::string> backends() {
  std::vector<std::string> names;
#ifdef TD_WITH_GLOO
  names.push_back("gloo");
#endif
#ifdef TD_WITH_NCCL
  names.push_back("nccl");
#endif
  return names;
}

bool hasBackend(const std::string& name) {
  const auto names = backends();
  return std::find(names.begin(), names.end(), name) != names.end();
}

// What a build without the backend should say, with the fix.
std::string missingBackend(const std::string& name) {
  if (name == "gloo") {
    return "initProcessGroup: this build of torch-diffusion has no Gloo backend: libtorch's Gloo headers were not found when it was built "
           "(Debian: sudo apt-get install -y libgloo-dev, then npm rebuild torch-diffusion)";
  }
  return "initProcessGroup: this build of torch-diffusion has no NCCL backend: it needs a CUDA libtorch and NCCL's headers (nccl.h) at build "
         "time; use backend \"gloo\" (CPU tensors) instead";
}

int64_t intField(Napi::Env env, const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  const std::string what = std::string("initProcessGroup: options.") + key;
  const int64_t v = int64Arg(env, o.Get(key), what);
  if (v < min || v > max) {
    throwError(env, what + ": expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "] but received " + std::to_string(v));
  }
  return v;
}

std::string optionalString(Napi::Env env, const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return "";
  return stringArg(env, v, std::string("initProcessGroup: options.") + key);
}

Napi::Value InitProcessGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray()) {
    throwTypeError(env, "initProcessGroup: expected an options object but received " + describeJsValue(info[0]));
  }
  const auto o = info[0].As<Napi::Object>();
  RendezvousOptions r;
  r.size = static_cast<int>(intField(env, o, "worldSize", 1, 1 << 20));
  r.rank = static_cast<int>(intField(env, o, "rank", 0, r.size - 1));
  r.masterAddr = stringArg(env, o.Get("masterAddr"), "initProcessGroup: options.masterAddr");
  if (r.masterAddr.empty()) throwError(env, "initProcessGroup: options.masterAddr: expected a host name or address but received \"\"");
  r.masterPort = static_cast<uint16_t>(intField(env, o, "masterPort", 1, 65535));
  r.timeout = std::chrono::milliseconds(intField(env, o, "timeoutMs", 1, int64_t{1} << 40));
  r.isServer = boolArg(env, o.Get("isServer"), "initProcessGroup: options.isServer");
  r.storePrefix = stringArg(env, o.Get("storePrefix"), "initProcessGroup: options.storePrefix");
  r.backend = stringArg(env, o.Get("backend"), "initProcessGroup: options.backend");
  if (r.backend != "gloo" && r.backend != "nccl") throwTypeError(env, "initProcessGroup: options.backend: expected \"gloo\" or \"nccl\" but received " + describeJsValue(o.Get("backend")));
  if (!hasBackend(r.backend)) throwError(env, missingBackend(r.backend));
  r.device = deviceArg(env, o.Get("device"), "initProcessGroup: options.device");
  if (r.backend == "nccl" && !r.device.is_cuda()) throwError(env, "initProcessGroup: the nccl backend works on a CUDA device, not " + r.device.str());
  if (r.backend == "nccl" && !r.device.has_index()) r.device = c10::Device(c10::kCUDA, 0);
  if (r.backend == "gloo") r.device = c10::Device(c10::kCPU);
  r.glooInterface = optionalString(env, o, "glooInterface");
  r.glooHostname = optionalString(env, o, "glooHostname");
  auto* cls = static_cast<Napi::FunctionReference*>(info.Data());
  auto* worker = new InitWorker(env, *cls, std::move(r));
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value DistributedBackends(const Napi::CallbackInfo& info) {
  const auto names = backends();
  auto result = Napi::Array::New(info.Env(), names.size());
  for (size_t i = 0; i < names.size(); ++i) result.Set(static_cast<uint32_t>(i), Napi::String::New(info.Env(), names[i]));
  return result;
}

// The tensors of a call: a non-empty array of live tensors, dense, on CPU or CUDA.
std::vector<at::Tensor> tensorsArg(Napi::Env env, const Napi::Value& value, const std::string& where) {
  if (!value.IsArray()) throwTypeError(env, where + ": expected an array of Tensors but received " + describeJsValue(value));
  auto array = value.As<Napi::Array>();
  if (array.Length() == 0) throwTypeError(env, where + ": expected a non-empty array of Tensors but received an empty array");
  std::vector<at::Tensor> tensors;
  tensors.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    const std::string what = where + ": tensors[" + std::to_string(i) + "]";
    const at::Tensor& t = tensors::From(env, array.Get(i), what);
    if (t.layout() != c10::kStrided) throwError(env, what + ": expected a dense (strided) tensor");
    tensors.push_back(t);
  }
  return tensors;
}

}  // namespace

Napi::Function ProcessGroupWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeProcessGroup",
                     {
                         InstanceAccessor<&ProcessGroupWrap::Rank>("rank"),
                         InstanceAccessor<&ProcessGroupWrap::WorldSize>("worldSize"),
                         InstanceAccessor<&ProcessGroupWrap::Backend>("backend"),
                         InstanceAccessor<&ProcessGroupWrap::Device>("device"),
                         InstanceAccessor<&ProcessGroupWrap::TimeoutMs>("timeoutMs"),
                         InstanceAccessor<&ProcessGroupWrap::IsDestroyed>("isDestroyed"),
                         InstanceMethod<&ProcessGroupWrap::AllReduce>("allReduce"),
                         InstanceMethod<&ProcessGroupWrap::Broadcast>("broadcast"),
                         InstanceMethod<&ProcessGroupWrap::Barrier>("barrier"),
                         InstanceMethod<&ProcessGroupWrap::Destroy>("destroy"),
                     });
}

ProcessGroupWrap::ProcessGroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupWrap>(info) {
  if (!pendingState) throwTypeError(info.Env(), "NativeProcessGroup: process groups are created by initProcessGroup(), not with new");
  state_ = std::move(*pendingState);
  pendingState = nullptr;
}

Napi::Value ProcessGroupWrap::Wrap(Napi::Env env, const Napi::FunctionReference& cls, std::shared_ptr<GroupState> state) {
  pendingState = &state;
  try {
    auto object = cls.New({});
    pendingState = nullptr;
    return object;
  } catch (...) {
    pendingState = nullptr;
    throw;
  }
}

const std::shared_ptr<GroupState>& ProcessGroupWrap::live(Napi::Env env, const char* what) const {
  if (destroyed_) throwError(env, std::string("ProcessGroup.") + what + ": the process group was destroyed");
  return state_;
}

Napi::Value ProcessGroupWrap::Rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state_->rank); }
Napi::Value ProcessGroupWrap::WorldSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state_->size); }
Napi::Value ProcessGroupWrap::Backend(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), state_->backend); }
Napi::Value ProcessGroupWrap::Device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), state_->device.str()); }
Napi::Value ProcessGroupWrap::TimeoutMs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(state_->timeout.count()));
}
Napi::Value ProcessGroupWrap::IsDestroyed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), destroyed_); }

Napi::Value ProcessGroupWrap::AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& state = live(env, "allReduce");
  auto tensors = tensorsArg(env, info[0], "ProcessGroup.allReduce");
  const std::string op = stringArg(env, info[1], "ProcessGroup.allReduce: op");
  c10d::ReduceOp::RedOpType redOp = c10d::ReduceOp::SUM;
  if (op == "min") {
    redOp = c10d::ReduceOp::MIN;
  } else if (op == "max") {
    redOp = c10d::ReduceOp::MAX;
  } else if (op != "sum" && op != "avg") {
    throwTypeError(env, "ProcessGroup.allReduce: op: expected \"sum\", \"avg\", \"min\" or \"max\" but received " + describeJsValue(info[1]));
  }
  const bool average = op == "avg";
  for (size_t i = 0; average && i < tensors.size(); ++i) {
    if (!at::isFloatingType(tensors[i].scalar_type())) {
      throwError(env, "ProcessGroup.allReduce: op \"avg\" needs floating-point tensors but tensors[" + std::to_string(i) + "] is " + dtypeName(tensors[i].scalar_type()));
    }
  }
  auto* worker = new AllReduceWorker(env, state, std::move(tensors), redOp, average);
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value ProcessGroupWrap::Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& state = live(env, "broadcast");
  auto tensors = tensorsArg(env, info[0], "ProcessGroup.broadcast");
  const int64_t root = int64Arg(env, info[1], "ProcessGroup.broadcast: root");
  if (root < 0 || root >= state->size) {
    throwError(env, "ProcessGroup.broadcast: root: expected a rank in [0, " + std::to_string(state->size) + ") but received " + std::to_string(root));
  }
  auto* worker = new BroadcastWorker(env, state, std::move(tensors), static_cast<int>(root));
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value ProcessGroupWrap::Barrier(const Napi::CallbackInfo& info) {
  auto* worker = new BarrierWorker(info.Env(), live(info.Env(), "barrier"));
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value ProcessGroupWrap::Destroy(const Napi::CallbackInfo& info) {
  if (destroyed_) {
    auto done = Napi::Promise::Deferred::New(info.Env());
    done.Resolve(info.Env().Undefined());
    return done.Promise();
  }
  destroyed_ = true;
  auto* worker = new DestroyWorker(info.Env(), state_);
  auto promise = worker->promise();
  worker->Queue();
  return promise;
}

void InitDistributed(Napi::Env env, Napi::Object exports) {
  auto cls = ProcessGroupWrap::Init(env);
  exports.Set("NativeProcessGroup", cls);
  // The class reference the rendezvous resolves with; freed when the environment goes.
  auto* reference = new Napi::FunctionReference(Napi::Persistent(cls));
  env.AddCleanupHook([reference] { delete reference; });
  exports.Set("initProcessGroup", Napi::Function::New(env, InitProcessGroup, "initProcessGroup", reference));
  exports.Set("distributedBackends", Napi::Function::New(env, DistributedBackends, "distributedBackends"));
}

}  // namespace td
