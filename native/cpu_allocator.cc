#include "cpu_allocator.h"

#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
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
    std::lock_guard<std::mutex> lock(mutex_);
    return {cachedBytes_, hits_, misses_};
  }

  void emptyCache() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& bin : free_) {
      for (void* p : bin.second) std::free(p);
    }
    free_.clear();
    cachedBytes_ = 0;
  }

  static CachingCpuAllocator& instance() {
    // Never destroyed: tensors freed during static destruction still find their allocator.
    static auto* allocator = new CachingCpuAllocator();
    return *allocator;
  }

 private:
  c10::DataPtr allocateImpl(size_t n) {
    const size_t size = n < kMinCachedSize ? n : binSize(n);
    void* data = nullptr;
    if (size >= kMinCachedSize) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        data = it->second.back();
        it->second.pop_back();
        cachedBytes_ -= size;
        ++hits_;
      } else {
        ++misses_;
      }
      if (data) sizes_[data] = size;
    }
    if (!data) {
      if (posix_memalign(&data, kAlignment, size == 0 ? kAlignment : size) != 0 || !data) {
        TORCH_CHECK(false, "out of CPU memory: failed to allocate ", n, " bytes");
      }
      if (size >= kMinCachedSize) {
        std::lock_guard<std::mutex> lock(mutex_);
        sizes_[data] = size;
      }
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  static void release(void* data) {
    if (!data) return;
    auto& self = instance();
    std::unique_lock<std::mutex> lock(self.mutex_);
    auto it = self.sizes_.find(data);
    if (it == self.sizes_.end()) {
      lock.unlock();
      std::free(data);
      return;
    }
    const size_t size = it->second;
    self.sizes_.erase(it);
    if (self.cachedBytes_ + size > self.budget_) {
      lock.unlock();
      std::free(data);
      return;
    }
    self.free_[size].push_back(data);
    self.cachedBytes_ += size;
  }

  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> sizes_;
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
