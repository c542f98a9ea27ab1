// NativeProcessGroup: one process group of PyTorch's own distributed engine, c10d — a TCPStore
// rendezvous, Gloo for CPU tensors and NCCL for CUDA tensors when libtorch has it. Thin: the
// collectives on lists of tensors, nothing about training (lib/distributed.ts and
// lib/training/ddp.ts hold that).
//
// Every call that can block (the rendezvous, each collective, destroy) runs on libuv's pool,
// never on the event loop. Collectives must match across ranks in order, so a group runs its
// calls one at a time, in the order JS issued them, whatever the pool's threads do.
#pragma once

#include <memory>

#include "common.h"

namespace td {

struct GroupState;

class ProcessGroupWrap : public Napi::ObjectWrap<ProcessGroupWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Hands a connected group to JS (from the rendezvous worker's OnOK).
  static Napi::Value Wrap(Napi::Env env, const Napi::FunctionReference& cls, std::shared_ptr<GroupState> state);

  // Instances come from initProcessGroup(); `new NativeProcessGroup()` from JS is a TypeError.
  explicit ProcessGroupWrap(const Napi::CallbackInfo& info);

 private:
  // [sync] accessors
  Napi::Value Rank(const Napi::CallbackInfo& info);
  Napi::Value WorldSize(const Napi::CallbackInfo& info);
  Napi::Value Backend(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value TimeoutMs(const Napi::CallbackInfo& info);
  Napi::Value IsDestroyed(const Napi::CallbackInfo& info);
  // [async] allReduce(tensors: NativeTensor[], op: "sum" | "avg" | "min" | "max"): every tensor, in
  // place, becomes the reduction over the ranks (one flat bucket per dtype, one collective each).
  Napi::Value AllReduce(const Napi::CallbackInfo& info);
  // [async] broadcast(tensors: NativeTensor[], root: number): every tensor, in place, takes root's values.
  Napi::Value Broadcast(const Napi::CallbackInfo& info);
  // [async] barrier(): resolves once every rank has reached it.
  Napi::Value Barrier(const Napi::CallbackInfo& info);
  // [async] destroy(): after the calls already issued, drops the group (its sockets and threads);
  // later calls throw. Idempotent.
  Napi::Value Destroy(const Napi::CallbackInfo& info);

  const std::shared_ptr<GroupState>& live(Napi::Env env, const char* what) const;

  std::shared_ptr<GroupState> state_;
  bool destroyed_ = false;
};

// Registers NativeProcessGroup and, on `exports`:
//   initProcessGroup(options) [async] -> NativeProcessGroup: options { rank, worldSize,
//     masterAddr, masterPort, timeoutMs, isServer, storePrefix, backend: "gloo" | "nccl",
//     device, glooInterface?, glooHostname? } — the rendezvous as PyTorch's env:// does it.
//   distributedBackends() [sync] -> the backends this build has ("gloo", "nccl").
void InitDistributed(Napi::Env env, Napi::Object exports);

}  // namespace td
