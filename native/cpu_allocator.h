// A caching CPU allocator for libtorch tensors. Without it, a Node process reuses freed
// tensor memory badly: glibc serves Node's many small allocations from the holes large
// tensors leave, so each new large tensor gets fresh pages and page-faults on first touch
// (measured: ~16 faults and ~0.4 ms per 128 KiB op, against ~0 and 11 µs in Python, where
// pymalloc keeps small objects out of glibc's heap). Large blocks freed here are kept for
// reuse, bounded by a byte budget.
#pragma once

#include "common.h"

namespace td {

// Installs the allocator as libtorch's CPU allocator (once per process).
void installCachingCpuAllocator();

// cpuAllocatorStats() -> { cachedBytes, hits, misses }
Napi::Value CpuAllocatorStats(const Napi::CallbackInfo& info);
// emptyCpuCache(): returns cached blocks to the system.
Napi::Value EmptyCpuCache(const Napi::CallbackInfo& info);

}  // namespace td
