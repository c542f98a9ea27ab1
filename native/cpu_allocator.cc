#include "cpu_allocator.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace td {

namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kMinCachedSize = 64 * 1024;  // smaller blocks go straight to malloc
constexpr size_t kDefaultBudget = size_t(1) << 30;

// Rounds up so that near-equal sizes share a bin: 16 KiB steps up to 1 MiB, then steps of
// 1/8 of the power of two (at most 12.5% waste).
size_t binSize(size_t n) {
  if (n <= (size_t(1) << 20)) return (n + 16383) & ~size_t(16383);
  size_t power = size_t(1) << (63 - __builtin_clzll(n));
  size_t step = power / 8;
  return (n + step - 1) / step * step;
}

// Guards the free lists: held for a map lookup and a vector push or pop. With the batch of a
// denoiser call split across threads (runConcurrently), two threads allocate at once all the
// time; a std::mutex there sleeps in the kernel when contended, and cost 2.4 ms of a 15.5 ms
// built-in U-Net call. Spinning costs nothing measurable.
class SpinLock {
 public:
  void lock() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) std::this_thread::yield();
    }
  }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// Every block starts kHeader bytes before the data it hands out, and the header holds the
// block's size: freeing a small block then needs no shared state at all (glibc's per-thread
// arenas take it), and a cached one only the free lists. The data pointer is also the DataPtr's
// context, as c10::Allocator::raw_allocate requires.
constexpr size_t kHeader = kAlignment;

struct CachedBlock {
  void* block;
  std::thread::id freedBy;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator() {
    if (const char* mb = std::getenv("TORCH_DIFFUSION_CPU_CACHE_MB")) budget_ = size_t(std::strtoull(mb, nullptr, 10)) << 20;
  }

#ifdef TD_ALLOCATOR_NONCONST
  c10::DataPtr allocate(size_t n) override { return allocateImpl(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#else
  c10::DataPtr allocate(size_t n) const override { return const_cast<CachingCpuAllocator*>(this)->allocateImpl(n); }
#endif

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  struct Stats {
    size_t cachedBytes, hits, misses;
  };
  Stats stats() {
    std::lock_guard<SpinLock> lock(lock_);
    return {cachedBytes_, hits_, misses_};
  }

  void emptyCache() {
    std::map<size_t, std::vector<CachedBlock>> blocks;
    {
      std::lock_guard<SpinLock> lock(lock_);
      blocks.swap(free_);
      cachedBytes_ = 0;
    }
    for (auto& bin : blocks) {
      for (const CachedBlock& cached : bin.second) std::free(cached.block);
    }
  }

  static CachingCpuAllocator& instance() {
    // Never destroyed: tensors freed during static destruction still find their allocator.
    static auto* allocator = new CachingCpuAllocator();
    return *allocator;
  }

 private:
  c10::DataPtr allocateImpl(size_t n) {
    const size_t size = n < kMinCachedSize ? n : binSize(n);
    void* block = nullptr;
    if (size >= kMinCachedSize) {
      std::lock_guard<SpinLock> lock(lock_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        block = takeNearest(it->second);
        cachedBytes_ -= size;
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (!block) {
      if (posix_memalign(&block, kAlignment, kHeader + size) != 0 || !block) {
        TORCH_CHECK(false, "out of CPU memory: failed to allocate ", n, " bytes");
      }
      *static_cast<size_t*>(block) = size;
    }
    void* data = static_cast<char*>(block) + kHeader;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  static void release(void* data) {
    if (!data) return;
    void* block = static_cast<char*>(data) - kHeader;
    const size_t size = *static_cast<size_t*>(block);
    if (size >= kMinCachedSize) {
      auto& self = instance();
      std::lock_guard<SpinLock> lock(self.lock_);
      if (self.cachedBytes_ + size <= self.budget_) {
        self.free_[size].push_back({block, std::this_thread::get_id()});
        self.cachedBytes_ += size;
        return;
      }
    }
    std::free(block);
  }

  // The most recently freed block of the bin that this thread freed (its lines are likely still in
  // this core's cache), else the most recent one. Two threads running halves of one batch took
  // each other's blocks otherwise, and the split call ran 15% slower than on glibc's malloc.
  static void* takeNearest(std::vector<CachedBlock>& bin) {
    const auto self = std::this_thread::get_id();
    size_t pick = bin.size() - 1;
    for (size_t i = bin.size(), looked = 0; i-- > 0 && looked < 8; ++looked) {
      if (bin[i].freedBy == self) {
        pick = i;
        break;
      }
    }
    void* block = bin[pick].block;
    bin.erase(bin.begin() + static_cast<std::ptrdiff_t>(pick));
    return block;
  }

  SpinLock lock_;
  std::map<size_t, std::vector<CachedBlock>> free_;
  size_t cachedBytes_ = 0;
  size_t budget_ = kDefaultBudget;
  size_t hits_ = 0;
  size_t misses_ = 0;
};

}  // namespace

void installCachingCpuAllocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char* off = std::getenv("TORCH_DIFFUSION_CPU_CACHE_MB"); off && std::strcmp(off, "0") == 0) return;
    // Priority above libtorch's default CPU allocator (0).
    c10::SetCPUAllocator(&CachingCpuAllocator::instance(), /*priority=*/10);
  });
}

Napi::Value CpuAllocatorStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto stats = CachingCpuAllocator::instance().stats();
  auto result = Napi::Object::New(env);
  result.Set("cachedBytes", Napi::Number::New(env, static_cast<double>(stats.cachedBytes)));
  result.Set("hits", Napi::Number::New(env, static_cast<double>(stats.hits)));
  result.Set("misses", Napi::Number::New(env, static_cast<double>(stats.misses)));
  return result;
}

Napi::Value EmptyCpuCache(const Napi::CallbackInfo& info) {
  CachingCpuAllocator::instance().emptyCache();
  return info.Env().Undefined();
}

}  // namespace td
