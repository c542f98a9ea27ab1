/** Process-wide settings and facts: threads, CUDA, memory, build. */
import type { BuildInfo, MemoryInfo } from "./binding";
import { assertInteger, invalid } from "./errors";
import { binding } from "./native";

/**
 * Live tensor handles and the bytes they keep alive; a leak test asserts numTensors returns to its baseline.
 * @example const before = memory().numTensors;
 */
export function memory(): MemoryInfo {
  return binding.memory();
}

/**
 * The caching CPU allocator's account: bytes of freed tensor memory kept for reuse and the
 * allocations it served from them. `TORCH_DIFFUSION_CPU_CACHE_MB` bounds the cache (0 turns it off).
 */
export function cpuAllocatorStats(): { cachedBytes: number; hits: number; misses: number } {
  return binding.cpuAllocatorStats();
}

/** Returns cached CPU tensor memory to the system. */
export function emptyCpuCache(): void {
  binding.emptyCpuCache();
}

/**
 * Sets libtorch's intra-op thread count (default: the machine's cores). It applies where the heavy
 * work runs: one executor thread takes every module call (sync or async), `backward` and every op
 * on 65,536 elements or more; the JS thread runs smaller ops on one thread, so that only one
 * OpenMP team competes for the cores (native/executor.h says what two cost).
 */
export function setNumThreads(n: number): void {
  assertInteger(n, "setNumThreads(n)", 1);
  binding.setNumThreads(n);
}

export function getNumThreads(): number {
  return binding.getNumThreads();
}

const MAX_BATCH_PIECES = 64;
let batchParallelism: number | "auto" = "auto";

/**
 * How many pieces a CPU model call's batch is split into, run at once on threads of their own
 * that share the {@link setNumThreads} threads (at least one each). It applies to calls made
 * without gradient recording (noGrad) of the denoisers' `forward` (and so `predict` and every
 * pipeline) and the VAE's `encode` / `decode`; calls on CUDA and calls that record gradients
 * are never split. "auto" (the default) is 2 with 2 or more threads, else 1. On this 2-core
 * machine, two half batches at one thread each ran 1.25–2.2× faster than the whole batch on two
 * threads: convolutions on small images split across threads poorly. Results match the unsplit
 * call to float32 rounding (bit for bit where the kernels do not depend on the batch size).
 * @example td.setBatchParallelism(1); // never split
 */
export function setBatchParallelism(pieces: number | "auto"): void {
  if (pieces !== "auto") {
    assertInteger(pieces, "setBatchParallelism(pieces)", 1);
    if (pieces > MAX_BATCH_PIECES) throw new Error(`setBatchParallelism(pieces): at most ${MAX_BATCH_PIECES} pieces (each runs on a thread of its own) but received ${pieces}`);
  }
  batchParallelism = pieces;
}

/** The setting ("auto" or a count), as given to {@link setBatchParallelism}. */
export function getBatchParallelism(): number | "auto" {
  return batchParallelism;
}

/** How many pieces a call with this batch on this device splits into now (1: not at all). */
export function batchPiecesFor(batch: number, device: string): number {
  if (device !== "cpu" || batch < 2 || binding.isGradEnabled()) return 1;
  const pieces = batchParallelism === "auto" ? (binding.getNumThreads() >= 2 ? 2 : 1) : batchParallelism;
  return Math.min(pieces, batch);
}

/**
 * TorchScript's graph-executor optimization (profiling, fusion, symbolic autodiff). By default
 * ("inference") it is on for module calls made without gradient recording (noGrad) and off for
 * calls that record gradients: with it, gradients differ in the last bit between a module's first
 * and later calls, which breaks exact training resume, while forward values came out bit-identical
 * and the optimized tiny SD U-Net call was 6–8% faster. `true` / `false` force it for every call
 * (`true` is PyTorch's default). Applies to calls made after it.
 * @example td.setGraphOptimization(false); // like torch.jit.optimized_execution(False)
 */
export function setGraphOptimization(mode: boolean | "inference"): void {
  if (typeof mode !== "boolean" && mode !== "inference") throw invalid('boolean or "inference"', "setGraphOptimization(mode)", mode);
  binding.setGraphOptimization(mode);
}

export function isGraphOptimizationEnabled(): boolean | "inference" {
  return binding.isGraphOptimizationEnabled();
}

/** @example if (cuda.isAvailable()) x = x.cuda(); */
export const cuda = {
  isAvailable: (): boolean => binding.cudaIsAvailable(),
  deviceCount: (): number => binding.cudaDeviceCount(),
  synchronize: (): void => binding.cudaSynchronize(),
};

/** The libtorch this addon was built against. */
export const buildInfo: BuildInfo = binding.buildInfo;
