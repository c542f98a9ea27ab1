// One long-lived thread that runs every asynchronous module call.
//
// libtorch's OpenMP thread team belongs to the thread that calls into it. Module calls queued on
// libuv's pool hopped between its four threads, and each got a team of its own: the teams fought
// over the cores, and a second intra-op thread bought nothing (builtin U-Net, batch 8, 2 threads:
// 117 ms against 98 ms when every call came from one thread, as in Python). Running the calls on
// this one thread keeps one team.
#pragma once

#include <functional>

namespace td {

// Runs `job` on the compute thread and waits for it; rethrows what it throws. Call it from a
// worker thread (an AsyncWorker's Execute), never from the JS thread.
void runOnComputeThread(const std::function<void()>& job);

}  // namespace td
