#include "executor.h"

#include <ATen/Parallel.h>
#include <ATen/Config.h>
#include <ATen/core/grad_mode.h>
#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif

#include <atomic>
#include <chrono>
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
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
  std::atomic<size_t> queued{0};  // jobs.size(), readable without the mutex while spinning
  bool started = false;
};

// Never destroyed: the detached thread may still wait on it during static destruction.
Queue& queue() {
  static auto* q = new Queue();
  return *q;
}

// Waking a thread blocked in the kernel took ~40 µs here, twice per synchronous call: a 256×256
// matmul went from 180 to 270 µs. So both sides first poll, yielding the core to any thread that
// can run (the executor's OpenMP helpers), for `spin` before they block.
template <class Ready>
bool spinUntil(std::chrono::microseconds spin, const Ready& ready) {
  const auto until = std::chrono::steady_clock::now() + spin;
  do {
    if (ready()) return true;
    std::this_thread::yield();
  } while (std::chrono::steady_clock::now() < until);
  return ready();
}

constexpr std::chrono::microseconds kExecutorSpin{200};  // the executor, for its next job
constexpr std::chrono::microseconds kCallerSpin{2000};   // a synchronous caller, for its result

void executorLoop() {
  Queue& q = queue();
  for (;;) {
    spinUntil(kExecutorSpin, [&] { return q.queued.load(std::memory_order_acquire) > 0; });
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(q.mutex);
      q.ready.wait(lock, [&] { return !q.jobs.empty(); });
      job = std::move(q.jobs.front());
      q.jobs.pop_front();
      q.queued.fetch_sub(1, std::memory_order_relaxed);
    }
    job();
  }
}

std::atomic<int> threadsForCompute{0};

// A helper thread of runConcurrently: takes one piece at a time.
struct Lane {
  std::mutex mutex;
  std::condition_variable changed;
  std::function<void()> piece;  // set by the executor, cleared by the lane when done
  std::atomic<bool> busy{false};  // piece is set: readable without the mutex while spinning
  std::exception_ptr error;
};

void laneLoop(Lane* lane) {
  for (;;) {
    std::function<void()> piece;
    // Polls like the executor: the next piece (a sampling loop's next step) comes within a few
    // hundred microseconds, and a wake-up from the kernel costs ~40 µs each way.
    spinUntil(kExecutorSpin, [&] { return lane->busy.load(std::memory_order_acquire); });
    {
      std::unique_lock<std::mutex> lock(lane->mutex);
      lane->changed.wait(lock, [&] { return static_cast<bool>(lane->piece); });
      piece = lane->piece;
    }
    std::exception_ptr error;
    try {
      piece();
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(lane->mutex);
      lane->error = error;
      lane->piece = nullptr;
      lane->busy.store(false, std::memory_order_release);
    }
    lane->changed.notify_all();
  }
}

// Only the executor thread touches the lanes; never destroyed, like the queue.
Lane& lane(size_t index) {
  static auto* lanes = new std::vector<std::unique_ptr<Lane>>();
  while (lanes->size() <= index) {
    lanes->push_back(std::make_unique<Lane>());
    std::thread(laneLoop, lanes->back().get()).detach();
  }
  return *(*lanes)[index];
}

// The calling thread's intra-op thread count alone. at::set_num_threads also resizes caffe2's
// pthreadpool, ending and spawning its threads, and a split call switched the executor thread from
// the job's count to its piece's and back on every call: on tiny SD's 7 ms steps the 50-step loop
// ran in 385 ms with that, 292 ms without.
void setThisThreadsCount(int threads) {
  // at::get_num_threads also runs ATen's once-per-thread setup, which would reset the count later.
  if (at::get_num_threads() == threads) return;
#if AT_PARALLEL_OPENMP
  omp_set_num_threads(threads);
#else
  at::set_num_threads(threads);
#endif
}

// Per-thread state a job (or a piece of one) runs under: the caller's grad mode (noGrad scopes),
// and the intra-op thread count (OpenMP keeps it per thread, and ATen reads its global setting into
// a thread only once: apply the current one on every job, so setNumThreads() applies at once).
void runUnderThreadState(int threads, bool gradEnabled, const std::function<void()>& work) {
  setThisThreadsCount(threads);
  const at::AutoGradMode mode(gradEnabled);
  work();
}

void enqueue(std::function<void()> job) {
  const int threads = computeThreads();
  const bool gradEnabled = at::GradMode::is_enabled();
  Queue& q = queue();
  {
    std::lock_guard<std::mutex> lock(q.mutex);
    if (!q.started) {
      std::thread(executorLoop).detach();
      q.started = true;
    }
    q.jobs.emplace_back([threads, gradEnabled, job = std::move(job)] { runUnderThreadState(threads, gradEnabled, job); });
    q.queued.fetch_add(1, std::memory_order_release);
  }
  q.ready.notify_one();
}

}  // namespace

void initComputeThreads() {
  int expected = 0;
  threadsForCompute.compare_exchange_strong(expected, at::get_num_threads());
  setThisThreadsCount(1);
}

int computeThreads() { return threadsForCompute.load(); }

void setComputeThreads(int threads) {
  threadsForCompute.store(threads);
  // Jobs set only their own thread's count (runUnderThreadState). Ops run on caffe2's pthreadpool
  // (QNNPACK, XNNPACK) take ATen's global one: set it here, once, and keep this thread at one.
  at::set_num_threads(threads);
  setThisThreadsCount(1);
}

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

void runConcurrently(const std::vector<std::function<void()>>& pieces) {
  if (pieces.empty()) return;
  const int threads = std::max(1, at::get_num_threads() / static_cast<int>(pieces.size()));
  const bool gradEnabled = at::GradMode::is_enabled();
  const auto underJobState = [threads, gradEnabled](const std::function<void()>& piece) {
    return [threads, gradEnabled, &piece] { runUnderThreadState(threads, gradEnabled, piece); };
  };
  for (size_t i = 1; i < pieces.size(); ++i) {
    Lane& helper = lane(i - 1);
    {
      std::lock_guard<std::mutex> lock(helper.mutex);
      helper.piece = underJobState(pieces[i]);
      helper.busy.store(true, std::memory_order_release);
    }
    helper.changed.notify_all();
  }
  std::exception_ptr error;
  try {
    underJobState(pieces[0])();
  } catch (...) {
    error = std::current_exception();
  }
  for (size_t i = 1; i < pieces.size(); ++i) {
    Lane& helper = lane(i - 1);
    spinUntil(kCallerSpin, [&] { return !helper.busy.load(std::memory_order_acquire); });
    std::unique_lock<std::mutex> lock(helper.mutex);
    helper.changed.wait(lock, [&] { return !helper.piece; });
    if (!error) error = helper.error;
  }
  if (error) std::rethrow_exception(error);
}

void runOnExecutorAndWait(const std::function<void()>& job) {
  struct Done {
    std::atomic<bool> flag{false};
    std::mutex mutex;
    std::condition_variable cv;
    std::exception_ptr error;
  } done;
  enqueue([&] {
    try {
      job();
    } catch (...) {
      done.error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(done.mutex);
    done.flag.store(true, std::memory_order_release);
    done.cv.notify_one();
  });
  if (!spinUntil(kCallerSpin, [&] { return done.flag.load(std::memory_order_acquire); })) {
    std::unique_lock<std::mutex> lock(done.mutex);
    done.cv.wait(lock, [&] { return done.flag.load(std::memory_order_acquire); });
  }
  // The job's last touch of `done` is under its mutex: take it once, so `done` outlives that.
  { std::lock_guard<std::mutex> lock(done.mutex); }
  if (done.error) std::rethrow_exception(done.error);
}

}  // namespace td
