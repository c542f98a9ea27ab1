/**
 * The generic op path: any registered operator by schema name, resolved once and cached.
 * Typed wrappers in tensor.ts / functional.ts sit on top; `op()` is the escape hatch.
 */
import { binding } from "./native";

const handles = new Map<string, number>();

function handleFor(name: string): number {
  let handle = handles.get(name);
  if (handle === undefined) {
    handle = binding.resolveOp(name);
    handles.set(name, handle);
  }
  return handle;
}

/** Calls op `name` with positional `args` (and keyword `kwargs`); returns tensors as Tensor. */
export function call<T = unknown>(name: string, args: unknown[], kwargs?: Record<string, unknown>): T {
  return binding.callOp(handleFor(name), args, kwargs) as T;
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
  return binding.opSchema(handleFor(name));
}
