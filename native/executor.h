// The one thread that runs libtorch's heavy work: every TorchScript call (Module.run and
// Module.runAsync), backward, and ops on large tensors. libtorch's OpenMP keeps a thread team per
// calling thread, and once there are more OpenMP threads than cores, libgomp stops spinning and
// every parallel region waits for its threads to wake: on this 2-core machine a U-Net call with 2
// intra-op threads took 26.5 ms async on libuv's four pool threads against 15.9 ms sync, and
// 35.6 ms on this thread once the JS thread had run a single parallel op (17.7 ms when it had
// not). So the JS thread runs its own (small) ops on one thread, and this thread alone uses the
// threads setNumThreads() gives. Calls run one at a time, in order, as they would on one thread.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace td {

/**
 * Work that answers a Promise. Execute() runs on the executor thread and touches libtorch values
 * only; Result() runs on the JS thread afterwards and gives the value to resolve with, unless
 * Execute() called SetError() or threw: then the Promise is rejected with that message.
 */
class ExecutorTask {
 public:
  // The async context is the caller's: the result's tensors are created in it, so AsyncLocalStorage
  // (tidyAsync's scopes) sees them where the call was made.
  explicit ExecutorTask(Napi::Env env);
  virtual ~ExecutorTask() = default;
  Napi::Promise promise() const { return deferred_.Promise(); }
  virtual void Execute() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  void SetError(std::string message) {
    error_ = std::move(message);
    failed_ = true;
  }
  /** JS thread: settles the Promise. */
  void Complete(Napi::Env env);
  /** Executor thread, when the environment is gone: frees the libtorch values, leaks the JS ones. */
  void abandon() {
    (void)resource_.release();
    (void)context_.release();
    delete this;
  }

 private:
  Napi::Promise::Deferred deferred_;
  // Both destroyed on the JS thread only (Complete). The callback scope needs the resource the
  // context was made with: AsyncLocalStorage reads its store from that object.
  std::unique_ptr<Napi::ObjectReference> resource_;
  std::unique_ptr<Napi::AsyncContext> context_;
  std::string error_;
  bool failed_ = false;
};

void deliverCompletedTask(Napi::Env env, Napi::Function unused, std::nullptr_t* context, ExecutorTask* task);
using ExecutorCompletions = Napi::TypedThreadSafeFunction<std::nullptr_t, ExecutorTask, deliverCompletedTask>;

/**
 * Where finished tasks go back to one environment. Node frees the thread-safe function when the
 * environment (a worker thread, say) shuts down, while the executor may still finish tasks for it:
 * `open` says, under `mutex`, whether it may still be called.
 */
struct ExecutorReturn {
  std::mutex mutex;
  bool open = true;
  ExecutorCompletions completions;
};

/** Per environment: its return path, and how many tasks are out (JS thread only). */
struct ExecutorChannel {
  std::shared_ptr<ExecutorReturn> back;
  size_t pending = 0;
};

/** From the addon's Init: the environment's channel, unreferenced so an idle addon never keeps Node alive. */
std::unique_ptr<ExecutorChannel> makeExecutorChannel(Napi::Env env);

/** From the addon's Init, on the JS thread: the compute thread count starts at libtorch's default; this thread uses one. */
void initComputeThreads();
/** Intra-op threads of the executor (setNumThreads / getNumThreads). */
int computeThreads();
void setComputeThreads(int threads);

/** Ops whose tensor arguments hold at least this many elements in all run on the executor (CallOp). */
constexpr int64_t kExecutorMinElements = 1 << 16;

/** JS thread: queues `task` (ownership passes) and returns its Promise. Jobs run under the caller's grad mode. */
Napi::Promise runOnExecutor(Napi::Env env, ExecutorTask* task);

/**
 * Executor thread, inside a job: runs the pieces at once, the first on this thread and each other
 * on a helper thread of its own, sharing this job's intra-op threads among them (at least one
 * each) under its grad mode; returns when all are done and rethrows the first piece's error.
 * On this 2-core machine two half batches of a small U-Net at one thread each ran 1.25-2.2x
 * faster than the whole batch on two threads: small convolutions split across threads poorly.
 */
void runConcurrently(const std::vector<std::function<void()>>& pieces);

/** JS thread: runs `job` on the executor thread after the queued tasks, under the caller's grad mode, and waits; rethrows what it throws. */
void runOnExecutorAndWait(const std::function<void()>& job);

}  // namespace td
