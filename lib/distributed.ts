/**
 * Several processes working as one: PyTorch's own distributed engine, c10d, from TypeScript.
 * A process group joins `worldSize` processes through a TCPStore rendezvous exactly as
 * `torch.distributed.init_process_group("gloo" | "nccl", init_method="env://")` does
 * (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`; under `torchrun` its agent
 * serves the store), then runs collectives on tensors: Gloo for CPU tensors, NCCL for CUDA ones
 * when libtorch has it. Every call is async and runs off the event loop; the calls of a group
 * run one at a time in the order they were made, and every rank must make the same calls in
 * the same order (as with torch.distributed).
 *
 * A rank that dies or stops answering fails the others' next collective with a
 * {@link DistributedError}: at once when its sockets close (a killed process), after
 * `timeoutMs` (default 60 s) when it hangs.
 *
 * @example
 * // torchrun --no-python --nproc-per-node 2 npx tsx script.ts   (or any launcher that sets the variables)
 * const group = await td.initProcessGroup();              // from the environment
 * const g = td.tensor([group.rank + 1]);
 * await group.allReduce(g, "sum");                        // g = [3] on both ranks
 * await group.destroy();
 */
import type { NativeProcessGroupInstance, ReduceOpName } from "./binding";
import { assertInteger, assertOneOf, invalid, isInteger } from "./errors";
import { binding } from "./native";
import { isTensor, type Tensor } from "./tensor";

export type { ReduceOpName } from "./binding";

/** `Symbol.asyncDispose` (Node's own key where it lacks one), for `await using group = ...`. */
const asyncDisposeSymbol: typeof Symbol.asyncDispose = ((Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for("nodejs.asyncDispose")) as typeof Symbol.asyncDispose;

/** Collectives and the rendezvous give up after this long without an answer. */
export const DEFAULT_DISTRIBUTED_TIMEOUT_MS = 60_000;

const REDUCE_OPS = ["sum", "avg", "min", "max"] as const;
const BACKENDS = ["gloo", "nccl"] as const;

/**
 * A collective or the rendezvous failed: another rank died, hung past the timeout, or made a
 * different call. The message names this rank and what failed.
 * @example try { await group.allReduce(grads, "avg"); } catch (e) { if (e instanceof DistributedError) console.error(e.rank, e.message); }
 */
export class DistributedError extends Error {
  constructor(message: string, readonly rank: number, readonly worldSize: number, readonly operation: string) {
    super(message);
    this.name = "DistributedError";
  }
}

/** What a launcher (torchrun, `torch-diffusion train --nproc-per-node N`) tells each process. */
export interface DistributedEnv {
  rank: number;
  worldSize: number;
  /** The process's index on its machine (picks its GPU). */
  localRank: number;
  masterAddr: string;
  masterPort: number;
  /** torchrun's agent serves the TCPStore (TORCHELASTIC_USE_AGENT_STORE=True): every rank is a client, under this prefix. */
  agentStorePrefix: string | null;
}

const ENV_NAMES = ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] as const;

function envInteger(env: NodeJS.ProcessEnv, name: string, min: number, max: number): number {
  const raw = env[name] ?? "";
  const value = /^\s*\d+\s*$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) throw invalid(`integer in [${min}, ${max}]`, `environment variable ${name}`, raw);
  return value;
}

/**
 * The env:// variables of a distributed launch, or null when this process was not launched
 * as one (none of RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set). Some but not all is an error
 * naming the missing ones.
 * @example const env = distributedEnv(); if (env) console.log(`rank ${env.rank} of ${env.worldSize}`);
 */
export function distributedEnv(env: NodeJS.ProcessEnv = process.env): DistributedEnv | null {
  const missing = ENV_NAMES.filter((name) => !env[name]);
  if (missing.length === ENV_NAMES.length) return null;
  if (missing.length > 0) {
    throw new Error(`distributed launch: environment variable${missing.length > 1 ? "s" : ""} ${missing.join(", ")} not set (${ENV_NAMES.filter((n) => !missing.includes(n)).join(", ")} ${ENV_NAMES.length - missing.length > 1 ? "are" : "is"}); launch with torchrun or torch-diffusion train --nproc-per-node N, which set all four`);
  }
  const worldSize = envInteger(env, "WORLD_SIZE", 1, 2 ** 20);
  const rank = envInteger(env, "RANK", 0, worldSize - 1);
  const localRank = env.LOCAL_RANK ? envInteger(env, "LOCAL_RANK", 0, worldSize - 1) : rank;
  const masterPort = envInteger(env, "MASTER_PORT", 1, 65535);
  const agent = env.TORCHELASTIC_USE_AGENT_STORE === "True";
  return { rank, worldSize, localRank, masterAddr: env.MASTER_ADDR!, masterPort, agentStorePrefix: agent ? `/worker/attempt_${env.TORCHELASTIC_RESTART_COUNT ?? "0"}` : null };
}

export interface ProcessGroupOptions {
  /** This process's rank in [0, worldSize). Default: RANK. */
  rank?: number;
  /** Processes in the group. Default: WORLD_SIZE. */
  worldSize?: number;
  /** Where rank 0 serves the rendezvous store. Default: MASTER_ADDR. */
  masterAddr?: string;
  /** Default: MASTER_PORT. */
  masterPort?: number;
  /** The process's index on its machine. Default: LOCAL_RANK, else rank. */
  localRank?: number;
  /** Give up on the rendezvous and on each collective after this long. Default 60 000 ms. */
  timeoutMs?: number;
  /** "gloo" (CPU tensors; default) or "nccl" (CUDA tensors; default when `device` is CUDA and the build has it). */
  backend?: "gloo" | "nccl";
  /** NCCL: the GPU of this rank. Default `cuda:<localRank>` with nccl, else "cpu". */
  device?: string;
}

/** Loopback addresses: every rank is on this machine, so Gloo binds 127.0.0.1 and nothing else. */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The c10d backends this build of the addon has ("gloo", and "nccl" with a CUDA libtorch).
 * @example if (!distributedBackends().includes("gloo")) console.log("rebuild with libgloo-dev");
 */
export function distributedBackends(): string[] {
  return binding.distributedBackends();
}

/**
 * Joins a process group; resolves once every rank has joined (or rejects after `timeoutMs`).
 * Options not given come from the environment, as PyTorch's env:// reads it.
 * @example
 * const group = await initProcessGroup({ rank: 0, worldSize: 2, masterAddr: "127.0.0.1", masterPort: 29500 });
 */
export async function initProcessGroup(options: ProcessGroupOptions = {}): Promise<ProcessGroup> {
  if (typeof options !== "object" || options === null || Array.isArray(options)) throw invalid("options object", "initProcessGroup options", options);
  const given = (["rank", "worldSize", "masterAddr", "masterPort"] as const).filter((k) => options[k] !== undefined);
  // Nothing given: env:// as PyTorch reads it (all four variables). Some given: the rest from the variables that are set.
  const env = given.length === 0 ? distributedEnv() : null;
  const fromEnv = <T>(option: string, variable: string, read: () => T | undefined): T => {
    const value = process.env[variable] ? read() : undefined;
    if (value === undefined) throw new Error(`initProcessGroup: no ${option}: pass options.${option} or set ${variable} (torchrun and torch-diffusion train --nproc-per-node set it)`);
    return value;
  };
  const worldSize = options.worldSize ?? env?.worldSize ?? fromEnv("worldSize", "WORLD_SIZE", () => envInteger(process.env, "WORLD_SIZE", 1, 2 ** 20));
  assertInteger(worldSize, "initProcessGroup options.worldSize", 1);
  const rank = options.rank ?? env?.rank ?? fromEnv("rank", "RANK", () => envInteger(process.env, "RANK", 0, worldSize - 1));
  if (!isInteger(rank) || rank < 0 || rank >= worldSize) throw invalid(`integer in [0, ${worldSize}) (the world size)`, "initProcessGroup options.rank", rank);
  const masterAddr = options.masterAddr ?? env?.masterAddr ?? fromEnv("masterAddr", "MASTER_ADDR", () => process.env.MASTER_ADDR);
  if (typeof masterAddr !== "string" || masterAddr === "") throw invalid("host name or address", "initProcessGroup options.masterAddr", masterAddr);
  const masterPort = options.masterPort ?? env?.masterPort ?? fromEnv("masterPort", "MASTER_PORT", () => envInteger(process.env, "MASTER_PORT", 1, 65535));
  if (!isInteger(masterPort) || masterPort < 1 || masterPort > 65535) throw invalid("port in [1, 65535]", "initProcessGroup options.masterPort", masterPort);
  const localRank = options.localRank ?? env?.localRank ?? rank;
  assertInteger(localRank, "initProcessGroup options.localRank", 0);
  const timeoutMs = options.timeoutMs ?? DEFAULT_DISTRIBUTED_TIMEOUT_MS;
  assertInteger(timeoutMs, "initProcessGroup options.timeoutMs", 1);
  if (options.device !== undefined && (typeof options.device !== "string" || !/^(cpu|cuda(:\d+)?)$/.test(options.device))) throw invalid("cpu, cuda or cuda:N", "initProcessGroup options.device", options.device);
  const cuda = options.device?.startsWith("cuda") === true;
  const backend = options.backend ?? (cuda && distributedBackends().includes("nccl") ? "nccl" : "gloo");
  assertOneOf(backend, BACKENDS, "initProcessGroup options.backend");
  const device = backend === "nccl" ? (options.device === undefined || options.device === "cuda" ? `cuda:${localRank}` : options.device) : "cpu";
  if (backend === "nccl") {
    // Without blocking wait NCCL never times out: a dead rank would hang the others.
    process.env.TORCH_NCCL_BLOCKING_WAIT ??= "1";
    process.env.NCCL_BLOCKING_WAIT ??= "1";
  }
  const ifname = process.env.GLOO_SOCKET_IFNAME?.split(",")[0];
  const agent = env?.agentStorePrefix ?? null;
  const origin = new Error();
  try {
    const native = await binding.initProcessGroup({
      rank, worldSize, masterAddr, masterPort, timeoutMs, backend, device,
      isServer: agent === null && rank === 0,
      storePrefix: agent === null ? "torch-diffusion" : `${agent}/torch-diffusion`,
      ...(ifname ? { glooInterface: ifname } : isLoopback(masterAddr) ? { glooHostname: "127.0.0.1" } : {}),
    });
    return new ProcessGroup(native, localRank);
  } catch (error) {
    throw distributedError(error, rank, worldSize, "initProcessGroup", origin, timeoutMs);
  }
}

/** A native rejection as a DistributedError with the caller's stack and what to look at. */
function distributedError(error: unknown, rank: number, worldSize: number, operation: string, origin: Error, timeoutMs: number): Error {
  const message = error instanceof Error ? error.message : String(error);
  if (!(error instanceof Error) || error instanceof TypeError || /was destroyed|has no (Gloo|NCCL) backend/.test(message)) return error as Error;
  const hint = operation === "initProcessGroup"
    ? `; every rank must start within ${timeoutMs} ms with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE`
    : `; another rank exited, made a different call, or did not answer within ${timeoutMs} ms (its own error says why)`;
  const wrapped = new DistributedError(`${message}${hint}`, rank, worldSize, operation);
  const stack = origin.stack;
  if (stack) wrapped.stack = `${wrapped.name}: ${wrapped.message}\n${stack.split("\n").slice(1).join("\n")}`;
  return wrapped;
}

function tensorList(value: unknown, where: string): Tensor[] {
  const list = isTensor(value) ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((t) => isTensor(t) && !t.isDisposed)) {
    throw invalid("Tensor or non-empty array of live Tensors", `${where} tensors`, value);
  }
  return list as Tensor[];
}

/**
 * A joined process group. Collectives work in place on the tensors given and resolve when
 * done; do not touch those tensors until then.
 */
export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly backend: "gloo" | "nccl";
  /** "cpu" (Gloo) or the rank's GPU (NCCL). */
  readonly device: string;
  readonly timeoutMs: number;

  /** Use {@link initProcessGroup}. */
  constructor(private readonly native: NativeProcessGroupInstance, readonly localRank: number) {
    if (!(native instanceof binding.NativeProcessGroup)) throw invalid("native process group from initProcessGroup()", "ProcessGroup", native);
    this.rank = native.rank;
    this.worldSize = native.worldSize;
    this.backend = native.backend;
    this.device = native.device;
    this.timeoutMs = native.timeoutMs;
  }

  get isDestroyed(): boolean {
    return this.native.isDestroyed;
  }

  /**
   * [async] Reduces each tensor over the ranks, in place (one flat bucket per dtype, one
   * collective each). "avg" divides the sum by the world size.
   * @example await group.allReduce(params.map((p) => p.grad!), "avg");
   */
  allReduce(tensors: Tensor | Tensor[], op: ReduceOpName = "sum"): Promise<void> {
    const list = tensorList(tensors, "ProcessGroup.allReduce");
    assertOneOf(op, REDUCE_OPS, "ProcessGroup.allReduce op");
    return this.call("allReduce", () => this.native.allReduce(list, op));
  }

  /**
   * [async] Gives every rank rank `root`'s values of each tensor, in place.
   * @example await group.broadcast(Object.values(model.namedParameters()), 0);
   */
  broadcast(tensors: Tensor | Tensor[], root = 0): Promise<void> {
    const list = tensorList(tensors, "ProcessGroup.broadcast");
    if (!isInteger(root) || root < 0 || root >= this.worldSize) throw invalid(`rank in [0, ${this.worldSize})`, "ProcessGroup.broadcast root", root);
    return this.call("broadcast", () => this.native.broadcast(list, root));
  }

  /** [async] Resolves once every rank has called it. @example if (group.rank === 0) write(); await group.barrier(); */
  barrier(): Promise<void> {
    return this.call("barrier", () => this.native.barrier());
  }

  /** [async] Leaves the group after the calls already made (closing its sockets); later calls throw. Idempotent. */
  destroy(): Promise<void> {
    return this.native.destroy();
  }

  async [asyncDisposeSymbol](): Promise<void> {
    await this.destroy();
  }

  toString(): string {
    return `ProcessGroup(rank ${this.rank} of ${this.worldSize}, ${this.backend}${this.isDestroyed ? ", destroyed" : ""})`;
  }

  private async call(operation: string, run: () => Promise<void>): Promise<void> {
    if (this.native.isDestroyed) throw new Error(`ProcessGroup.${operation}: the process group was destroyed`);
    const origin = new Error();
    try {
      await run();
    } catch (error) {
      throw distributedError(error, this.rank, this.worldSize, operation, origin, this.timeoutMs);
    }
  }
}

/** True for a ProcessGroup from initProcessGroup(). @example if (isProcessGroup(options.distributed)) ... */
export function isProcessGroup(value: unknown): value is ProcessGroup {
  return value instanceof ProcessGroup;
}
