/**
 * The generic op path: any registered operator by schema name, resolved once and cached.
 * Typed wrappers in tensor.ts / functional.ts sit on top; `op()` is the escape hatch.
 */
import { binding } from "./native";

interface ResolvedOp {
  handle: number;
  /** Exactly one Tensor back: called through callTensorOp, which hands back a bare handle. */
  returnsTensor: boolean;
}
const resolved = new Map<string, ResolvedOp>();

function resolve(name: string): ResolvedOp {
  let op = resolved.get(name);
  if (op === undefined) {
    const handle = binding.resolveOp(name);
    op = { handle, returnsTensor: binding.opReturnsTensor(handle) };
    resolved.set(name, op);
  }
  return op;
}

let tensorFromHandle: (handle: number) => unknown = () => {
  throw new Error("torch-diffusion: lib/tensor.ts has not registered the Tensor class");
};
/** lib/tensor.ts tells the op path how a handle becomes a Tensor (avoids an import cycle). */
export function setTensorFromHandle(wrap: (handle: number) => unknown): void {
  tensorFromHandle = wrap;
}

/** Calls op `name` with positional `args` (and keyword `kwargs`); returns tensors as Tensor. */
export function call<T = unknown>(name: string, args: unknown[], kwargs?: Record<string, unknown>): T {
  const op = resolve(name);
  if (!op.returnsTensor) return binding.callOp(op.handle, args, kwargs) as T;
  const out = binding.callTensorOp(op.handle, args, kwargs);
  return (typeof out === "number" ? tensorFromHandle(out) : out) as T;
}

/**
 * zeros (code 0) / ones (1) / randn (2) / rand (3) of a CPU tensor, called unboxed
 * (binding.factoryOp) where the addon can; undefined where the generic op must take the call.
 * `dtypeId` is torch's ScalarType number.
 */
export function callFactory<T = unknown>(code: number, shape: number[], dtypeId: number, generator?: unknown): T | undefined {
  const handle = binding.factoryOp(code, shape, dtypeId, generator);
  return handle === undefined ? undefined : (tensorFromHandle(handle) as T);
}

function isKeywordBag(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && Object.getPrototypeOf(value) === Object.prototype;
}

/**
 * Calls any aten or custom op by its schema name, for everything without a typed wrapper.
 * A trailing plain object is taken as keyword arguments.
 * @example const y = op("aten::hardtanh", x, -0.5, 0.5) as Tensor;
 * @example const r = op("aten::randn.generator", [2, 3], { generator: new Generator(1) });
 */
export function op(name: string, ...args: unknown[]): unknown {
  if (typeof name !== "string") throw new TypeError(`op: expected an op name such as "aten::add.Tensor" but received ${typeof name}`);
  const last = args[args.length - 1];
  if (isKeywordBag(last)) return call(name, args.slice(0, -1), last);
  return call(name, args);
}

/** Every registered op as `namespace::name[.overload]`, e.g. for tools that list or test the op surface. */
export function opNames(): string[] {
  return binding.opNames();
}

/** The schema string of op `name`, e.g. `aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor`. */
export function opSchema(name: string): string {
  return binding.opSchema(resolve(name).handle);
}
