/**
 * TorchScript modules: `load(pathOrBuffer, {device, dtype})`. `forward` and named
 * methods are async (the executor thread, off the event loop) with sync twins; arguments are
 * converted by the method's TorchScript schema.
 */
import type { DType, NativeModuleInstance } from "./binding";
import { invalid } from "./errors";
import { binding } from "./native";
import { assertTensor, disposeSymbol, isDtype, type Tensor } from "./tensor";

const NativeModule = binding.NativeModule as unknown as new () => NativeModuleInstance;

/**
 * Re-raises a native async error with the caller's stack, so it points at the user's line.
 * `origin` is created at the call; its stack is only formatted (costly under source maps) on failure.
 */
async function withCallerStack<T>(promise: Promise<T>, origin: Error): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    const err = error instanceof Error ? error : new Error(String(error));
    const stack = origin.stack;
    if (stack) err.stack = `${err.name}: ${err.message}\n${stack.split("\n").slice(1).join("\n")}`;
    throw err;
  }
}

export class Module extends NativeModule {
  /** [async] Runs `forward`. @example const eps = await unet.forward(latents, t, context) as Tensor; */
  forward(...args: unknown[]): Promise<unknown> {
    return this.callMethod("forward", args);
  }
  /** [sync] Runs `forward` on the calling thread. */
  forwardSync(...args: unknown[]): unknown {
    return this.run("forward", args);
  }
  /** [async] Runs any TorchScript method by name, with optional keyword arguments. */
  callMethod(method: string, args: unknown[] = [], kwargs?: Record<string, unknown>): Promise<unknown> {
    return withCallerStack(this.runAsync(method, args, kwargs), new Error());
  }
  /**
   * [async] Calls `method` once per argument list, the calls at once on threads of their own that
   * share the `setNumThreads` threads; the results in order. Inference only: the pieces of one
   * batch (what {@link setBatchParallelism} does to denoiser calls).
   * @example const [a, b] = await unet.callMethodConcurrently("forward", [[x1, t, c1], [x2, t, c2]]);
   */
  callMethodConcurrently(method: string, argLists: unknown[][]): Promise<unknown[]> {
    return withCallerStack(this.runConcurrentlyAsync(method, argLists), new Error());
  }
  /** [sync] Runs any TorchScript method by name. */
  callMethodSync(method: string, args: unknown[] = [], kwargs?: Record<string, unknown>): unknown {
    return this.run(method, args, kwargs);
  }
  /** The TorchScript schema of a method. @example unet.methodSchema("forward") */
  methodSchema(method: string): string {
    if (typeof method !== "string") throw invalid("method name", "methodSchema(method)", method);
    return super.methodSchema(method);
  }
  /** A parameter, buffer or constant by dotted name (a submodule gives "<module name>"). @example m.attribute("conv.weight") */
  attribute(name: string): unknown {
    if (typeof name !== "string") throw invalid("attribute name", "attribute(name)", name);
    return super.attribute(name);
  }
  parameters(): Tensor[] {
    return Object.values(this.namedParameters()) as Tensor[];
  }
  eval(): this {
    return this.train(false);
  }
  /** Moves or casts every parameter and buffer in place. @example m.to("cuda"); m.to({ dtype: "float16" }) */
  moveTo(target: string | { device?: string; dtype?: DType }): this {
    const options = typeof target === "string" ? (isDtype(target) ? { dtype: target } : { device: target }) : target;
    return this.to(options.device ?? null, options.dtype ?? null);
  }
  /** `using unet = td.load(file)` disposes the module at the end of the block. */
  [disposeSymbol](): void {
    this.dispose();
  }
  /** Replaces a parameter by dotted name, also with a new shape (e.g. widening a conv for InstructPix2Pix). */
  setParameter(name: string, value: Tensor): void {
    assertTensor(value, `setParameter("${name}") value`);
    this.setAttribute(name, value, "parameter");
  }
  setBuffer(name: string, value: Tensor): void {
    assertTensor(value, `setBuffer("${name}") value`);
    this.setAttribute(name, value, "buffer");
  }
  /** A deep copy with its own parameters (e.g. for EMA weights). */
  copy(): Module {
    return this.clone() as unknown as Module;
  }
}
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Module extends NativeModuleInstance {}

binding.setModuleClass(Module);

export interface LoadOptions {
  device?: string;
  dtype?: DType;
}

/**
 * Loads a TorchScript module from a file path or a Buffer.
 * @example const unet = load("model/unet/model.pt", { device: "cuda", dtype: "float16" });
 */
export function load(source: string | Buffer, options: LoadOptions = {}): Module {
  if (typeof source !== "string" && !Buffer.isBuffer(source)) throw invalid("file path or Buffer", "load source", source);
  if (options.dtype !== undefined && !isDtype(options.dtype)) throw invalid("a dtype name", "options.dtype", options.dtype);
  const module = binding.loadModule(source, options.device) as unknown as Module;
  if (options.dtype) module.to(null, options.dtype);
  module.eval();
  return module;
}
