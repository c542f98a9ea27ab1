/**
 * The whole native interface as TypeScript types: the rest of the TS never sees `any`
 * from the addon. Each method says [sync] or [async].
 */

export type DType = "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool";

/**
 * A JS Tensor as the addon sees it: lib/tensor.ts's class, holding a slot of the addon's tensor
 * table (its handle) under the symbol it registers with `setTensorFactory`.
 */
export type NativeTensorInstance = object;
export type TypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array | Uint16Array;

export interface NativeGeneratorInstance {
  manualSeed(seed: number | bigint): this;
  readonly seed: number | bigint;
  readonly device: string;
  getState(): NativeTensorInstance;
  setState(state: NativeTensorInstance): void;
}

export interface NativeModuleInstance {
  /** [sync] Calls a TorchScript method; arguments are converted by its schema. */
  run(method: string, args: unknown[], kwargs?: Record<string, unknown>): unknown;
  /** [async] Same, off the JS thread (native/executor.h). */
  runAsync(method: string, args: unknown[], kwargs?: Record<string, unknown>): Promise<unknown>;
  /** [async] One call per argument list, all at once on threads of their own; the results in order. */
  runConcurrentlyAsync(method: string, argLists: unknown[][]): Promise<unknown[]>;
  methodNames(): string[];
  methodSchema(method: string): string;
  namedParameters(recurse?: boolean): Record<string, NativeTensorInstance>;
  namedBuffers(recurse?: boolean): Record<string, NativeTensorInstance>;
  namedModules(): string[];
  train(on?: boolean): this;
  readonly training: boolean;
  to(device: string | null, dtype: DType | null): this;
  save(path: string): void;
  saveToBuffer(): Buffer;
  setAttribute(name: string, value: NativeTensorInstance, kind: "parameter" | "buffer"): void;
  clone(): NativeModuleInstance;
  attribute(name: string): unknown;
  /** Drops the module now (its memory is freed unless tensors handed out hold it); later calls throw. */
  dispose(): void;
  readonly isDisposed: boolean;
}

/** How collectives combine the ranks' values: "avg" is "sum" divided by the world size (floating-point tensors only). */
export type ReduceOpName = "sum" | "avg" | "min" | "max";

/** A c10d process group as the addon defines it; lib/distributed.ts wraps it. */
export interface NativeProcessGroupInstance {
  readonly rank: number;
  readonly worldSize: number;
  readonly backend: "gloo" | "nccl";
  /** Where collectives run: "cpu" (Gloo) or "cuda:N" (NCCL); tensors elsewhere are copied there and back. */
  readonly device: string;
  readonly timeoutMs: number;
  readonly isDestroyed: boolean;
  /** [async] In place: each tensor becomes the reduction over the ranks (one flat bucket per dtype). */
  allReduce(tensors: NativeTensorInstance[], op: ReduceOpName): Promise<void>;
  /** [async] In place: each tensor takes rank `root`'s values. */
  broadcast(tensors: NativeTensorInstance[], root: number): Promise<void>;
  /** [async] Resolves once every rank has reached it. */
  barrier(): Promise<void>;
  /** [async] Drops the group after the calls already issued; later calls throw. Idempotent. */
  destroy(): Promise<void>;
}

/** The rendezvous, as lib/distributed.ts resolves it from options or the environment. */
export interface NativeProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  /** This process serves the TCPStore (rank 0, unless a launcher's agent does). */
  isServer: boolean;
  storePrefix: string;
  backend: "gloo" | "nccl";
  device: string;
  glooInterface?: string;
  glooHostname?: string;
}

export interface MemoryInfo {
  /** Live tensor handles (not disposed, not collected). */
  numTensors: number;
  /** Distinct storages those handles keep alive. */
  numStorages: number;
  cpuBytes: number;
  cudaBytes: number;
}

export interface BuildInfo {
  torchVersion: string;
  cuda: boolean;
  libtorchDir?: string;
}

export interface Binding {
  NativeModule: abstract new () => NativeModuleInstance;
  NativeGenerator: new (seed?: number | bigint, device?: string) => NativeGeneratorInstance;
  tensorFromBuffer(values: ArrayBufferView, shape: number[], sourceDtype: DType, dtype: DType, device: string): NativeTensorInstance;
  memory(): MemoryInfo;
  cpuAllocatorStats(): { cachedBytes: number; hits: number; misses: number };
  emptyCpuCache(): void;
  resolveOp(name: string): number;
  callOp(handle: number, args: unknown[], kwargs?: Record<string, unknown>): unknown;
  /** callOp for an op returning exactly one Tensor (opReturnsTensor): a new tensor's handle, an input Tensor it returned, or null. */
  callTensorOp(handle: number, args: unknown[], kwargs?: Record<string, unknown>): number | NativeTensorInstance | null;
  opReturnsTensor(handle: number): boolean;
  /** add / sub / mul / div (codes 0–3) of two tensor handles, unboxed: the result's handle, or undefined where callOp must take the call. */
  binaryOp(code: number, self: number, other: number, alpha?: unknown): number | undefined;
  /** The same with a number or boolean `other`. */
  binaryScalarOp(code: number, self: number, other: unknown, alpha?: unknown): number | undefined;
  /** zeros / ones / randn / rand (codes 0–3) of a CPU tensor of torch ScalarType `dtypeId`, unboxed: the result's handle, or undefined where callOp must take the call. */
  factoryOp(code: number, shape: number[], dtypeId: number, generator?: unknown): number | undefined;
  opSchema(handle: number): string;
  /** [sync] Every registered op as "namespace::name[.overload]". */
  opNames(): string[];
  loadModule(source: string | Buffer, device?: string): NativeModuleInstance;
  saveValue(value: unknown): Buffer;
  loadValue(bytes: Buffer): unknown;
  manualSeed(seed: number | bigint): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  setGradEnabled(enabled: boolean): void;
  isGradEnabled(): boolean;
  setGraphOptimization(mode: boolean | "inference"): void;
  isGraphOptimizationEnabled(): boolean | "inference";
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  cudaSynchronize(): void;
  /** lib/tensor.ts registers how a handle becomes a Tensor, and the symbol under which a Tensor holds it. */
  setTensorFactory(factory: (handle: number) => NativeTensorInstance, handleKey: symbol): void;
  /** [sync] Frees a handle's slot; unknown and freed handles are ignored. */
  releaseTensor(handle: number): void;
  // [sync] The Tensor properties and methods, by handle; a freed handle throws "already disposed".
  tensorShape(handle: number): number[];
  tensorDtype(handle: number): DType;
  tensorDevice(handle: number): string;
  tensorNdim(handle: number): number;
  tensorNumel(handle: number): number;
  tensorRequiresGrad(handle: number): boolean;
  tensorSetRequiresGrad(handle: number, on: boolean): void;
  tensorGrad(handle: number): NativeTensorInstance | null;
  tensorSetGrad(handle: number, grad: NativeTensorInstance | null): void;
  tensorIsLeaf(handle: number): boolean;
  /** Runs autograd from the tensor. */
  tensorBackward(handle: number, gradient: NativeTensorInstance | null, retainGraph: boolean | undefined, createGraph: boolean): void;
  /** A copy of the values, converted to `dtype` (float16/bfloat16 as raw Uint16 bits). */
  tensorData(handle: number, dtype?: DType): TypedArray;
  /** The single value of a one-element tensor. */
  tensorItem(handle: number): number | boolean;
  tensorIsContiguous(handle: number): boolean;
  tensorSharesStorage(handle: number, other: NativeTensorInstance): boolean;
  setModuleClass(cls: Function): void;
  NativeProcessGroup: abstract new () => NativeProcessGroupInstance;
  /** [async] Joins a process group: resolves once every rank has. */
  initProcessGroup(options: NativeProcessGroupOptions): Promise<NativeProcessGroupInstance>;
  /** [sync] The c10d backends this build has: "gloo", "nccl". */
  distributedBackends(): string[];
  buildInfo: BuildInfo;
  /** torch's ScalarType number of each dtype name (for factoryOp). */
  dtypeIds: Record<string, number>;
}
