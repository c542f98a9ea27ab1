#include "compute_thread.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace td {

namespace {

struct Job {
  const std::function<void()>* run;
  std::exception_ptr error;
  bool done = false;
};

class ComputeThread {
 public:
  ComputeThread() : thread_([this] { loop(); }) {
    // Never joined: it outlives every call, and the process may exit with it waiting.
    thread_.detach();
  }

  void run(const std::function<void()>& job) {
    Job entry{&job};
    std::unique_lock<std::mutex> lock(mutex_);
    queue_.push_back(&entry);
    wake_.notify_all();
    finished_.wait(lock, [&] { return entry.done; });
    if (entry.error) std::rethrow_exception(entry.error);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return !queue_.empty(); });
      Job* job = queue_.front();
      queue_.pop_front();
      lock.unlock();
      try {
        (*job->run)();
      } catch (...) {
        job->error = std::current_exception();
      }
      lock.lock();
      job->done = true;
      finished_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  std::deque<Job*> queue_;
  std::thread thread_;
};

}  // namespace

void runOnComputeThread(const std::function<void()>& job) {
  // Leaked on purpose: no destructor may run (or wait) at process exit.
  static ComputeThread* computeThread = new ComputeThread();
  computeThread->run(job);
}

}  // namespace td
