#include "executor.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include "addon_data.h"

namespace td {

namespace {

struct Queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::function<void()>> jobs;
  bool started = false;
};

// Never destroyed: the detached thread may still wait on it during static destruction.
Queue& queue() {
  static auto* q = new Queue();
  return *q;
}

void executorLoop() {
  Queue& q = queue();
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(q.mutex);
      q.ready.wait(lock, [&] { return !q.jobs.empty(); });
      job = std::move(q.jobs.front());
      q.jobs.pop_front();
    }
    job();
  }
}

std::atomic<int> threadsForCompute{0};

// The intra-op thread count is set per thread (OpenMP), and ATen reads its global setting into a
// thread only once: apply the current one on every job, so setNumThreads() applies at once.
void enqueue(std::function<void()> job) {
  const int threads = computeThreads();
  Queue& q = queue();
  {
    std::lock_guard<std::mutex> lock(q.mutex);
    if (!q.started) {
      std::thread(executorLoop).detach();
      q.started = true;
    }
    q.jobs.emplace_back([threads, job = std::move(job)] {
      if (at::get_num_threads() != threads) at::set_num_threads(threads);
      job();
    });
  }
  q.ready.notify_one();
}

}  // namespace

void initComputeThreads() {
  int expected = 0;
  threadsForCompute.compare_exchange_strong(expected, at::get_num_threads());
  at::set_num_threads(1);
}

int computeThreads() { return threadsForCompute.load(); }

void setComputeThreads(int threads) { threadsForCompute.store(threads); }

ExecutorTask::ExecutorTask(Napi::Env env) : deferred_(Napi::Promise::Deferred::New(env)) {
  const Napi::Object resource = Napi::Object::New(env);
  resource_ = std::make_unique<Napi::ObjectReference>(Napi::Persistent(resource));
  context_ = std::make_unique<Napi::AsyncContext>(env, "torch-diffusion", resource);
}

void ExecutorTask::Complete(Napi::Env env) {
  Napi::HandleScope scope(env);
  napi_callback_scope opened = nullptr;
  if (napi_open_callback_scope(env, resource_->Value(), *context_, &opened) != napi_ok) {
    deferred_.Reject(Napi::Error::New(env, "torch-diffusion: could not enter the caller's async context").Value());
    return;
  }
  const Napi::CallbackScope callbackScope(env, opened);
  if (failed_) {
    deferred_.Reject(Napi::Error::New(env, error_).Value());
    return;
  }
  try {
    deferred_.Resolve(Result(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (const std::exception& e) {
    deferred_.Reject(Napi::Error::New(env, e.what()).Value());
  }
}

void deliverCompletedTask(Napi::Env env, Napi::Function, std::nullptr_t*, ExecutorTask* task) {
  if (env == nullptr) {  // the environment is going away
    task->abandon();
    return;
  }
  std::unique_ptr<ExecutorTask> owned(task);
  ExecutorChannel& channel = *addonData(env).executor;
  if (--channel.pending == 0) channel.back->completions.Unref(env);
  owned->Complete(env);
}

std::unique_ptr<ExecutorChannel> makeExecutorChannel(Napi::Env env) {
  auto channel = std::make_unique<ExecutorChannel>();
  channel->back = std::make_shared<ExecutorReturn>();
  channel->back->completions = ExecutorCompletions::New(env, "torch-diffusion executor", 0, 1);
  channel->back->completions.Unref(env);
  // Cleanup hooks run last-added first: this one closes the way back before Node frees the
  // thread-safe function (its own hook, added just above).
  auto* hold = new std::shared_ptr<ExecutorReturn>(channel->back);
  napi_add_env_cleanup_hook(
      env,
      [](void* arg) {
        std::unique_ptr<std::shared_ptr<ExecutorReturn>> back(static_cast<std::shared_ptr<ExecutorReturn>*>(arg));
        std::lock_guard<std::mutex> lock((*back)->mutex);
        (*back)->open = false;
      },
      hold);
  return channel;
}

Napi::Promise runOnExecutor(Napi::Env env, ExecutorTask* task) {
  Napi::Promise promise = task->promise();
  ExecutorChannel& channel = *addonData(env).executor;
  // Referenced while tasks are out, so Node waits for their results.
  if (channel.pending++ == 0) channel.back->completions.Ref(env);
  enqueue([task, back = channel.back]() {
    try {
      task->Execute();
    } catch (const std::exception& e) {
      task->SetError(e.what());
    } catch (...) {
      task->SetError("unknown C++ exception");
    }
    // Once the environment shuts down nobody waits for the Promise, and its async context must
    // not be destroyed off the JS thread: leak it.
    std::lock_guard<std::mutex> lock(back->mutex);
    if (!back->open || back->completions.NonBlockingCall(task) != napi_ok) task->abandon();
  });
  return promise;
}

void runOnExecutorAndWait(const std::function<void()>& job) {
  std::promise<void> done;
  enqueue([&] {
    try {
      job();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  done.get_future().get();  // rethrows the job's exception here
}

}  // namespace td
