/**
 * Tensor factories. Defaults follow PyTorch, except that plain JS number arrays become
 * float32 (JS has one number type, so `[1, 2]` cannot say "int").
 */
import type { DType } from "./binding";
import { call, callFactory } from "./dispatch";
import { assertInteger, assertShape, invalid } from "./errors";
import { binding } from "./native";
import type { Generator } from "./random";
import { isDtype, type Tensor, type TypedArray } from "./tensor";

export interface TensorOptions {
  dtype?: DType;
  device?: string;
}
export interface RandomOptions extends TensorOptions {
  generator?: Generator;
}

type Nested = number | boolean | Nested[];

function sourceDtypeOf(values: TypedArray, dtype: DType | undefined): DType {
  if (values instanceof Float32Array) return "float32";
  if (values instanceof Float64Array) return "float64";
  if (values instanceof BigInt64Array) return "int64";
  if (values instanceof Int32Array) return "int32";
  if (values instanceof Int16Array) return "int16";
  if (values instanceof Int8Array) return "int8";
  if (values instanceof Uint8Array) return dtype === "bool" ? "bool" : "uint8";
  if (values instanceof Uint16Array && (dtype === "float16" || dtype === "bfloat16")) return dtype;
  throw invalid("Float32Array, Float64Array, BigInt64Array, Int32Array, Int16Array, Int8Array, Uint8Array (or Uint16Array bits with dtype float16/bfloat16)", "tensor values", values);
}

function flatten(values: Nested, shape: number[], out: (number | boolean)[], depth: number): void {
  if (!Array.isArray(values)) {
    if (typeof values !== "number" && typeof values !== "boolean") throw invalid("number or boolean", `tensor values at depth ${depth}`, values);
    if (depth !== shape.length) throw new Error(`tensor: ragged nested array (a value at depth ${depth}, expected depth ${shape.length})`);
    out.push(values);
    return;
  }
  if (depth === shape.length) throw new Error(`tensor: ragged nested array (an array at depth ${depth})`);
  if (values.length !== shape[depth]) throw new Error(`tensor: ragged nested array (length ${values.length} at depth ${depth}, expected ${shape[depth]})`);
  for (const item of values) flatten(item, shape, out, depth + 1);
}

function inferShape(values: Nested): number[] {
  const shape: number[] = [];
  let level: Nested = values;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
    if (level === undefined) break;
  }
  return shape;
}

/**
 * Creates a tensor from a TypedArray (with `shape`), nested arrays or a single number.
 * @example tensor([[1, 2], [3, 4]])                        // float32 [2, 2]
 * @example tensor(new Float32Array(6), [2, 3], { device: "cuda" })
 */
export function tensor(values: TypedArray | Nested, shape?: number[], options: TensorOptions = {}): Tensor {
  if (options.dtype !== undefined && !isDtype(options.dtype)) throw invalid("a dtype name", "options.dtype", options.dtype);
  const device = options.device ?? "cpu";
  if (ArrayBuffer.isView(values)) {
    const typed = values as TypedArray;
    const source = sourceDtypeOf(typed, options.dtype);
    const finalShape = shape ?? [typed.length];
    assertShape(finalShape);
    return binding.tensorFromBuffer(typed, finalShape, source, options.dtype ?? source, device) as Tensor;
  }
  const inferred = inferShape(values);
  const flat: (number | boolean)[] = [];
  flatten(values, inferred, flat, 0);
  const finalShape = shape ?? inferred;
  assertShape(finalShape);
  const allBool = flat.length > 0 && flat.every((v) => typeof v === "boolean");
  const dtype = options.dtype ?? (allBool ? "bool" : "float32");
  const buffer = Float64Array.from(flat, Number);
  return binding.tensorFromBuffer(buffer, finalShape, "float64", dtype, device) as Tensor;
}

/**
 * The `dtype, layout, device, pin_memory` every factory op's schema ends with, by position:
 * keyword arguments cost the addon a property walk and a string conversion each.
 */
const factoryArgs = (options: TensorOptions, fallback: DType | null = "float32"): unknown[] => [options.dtype ?? fallback, null, options.device ?? null, null];

/**
 * zeros (0) / ones (1) / randn (2) / rand (3) on the CPU without the generic op path's argument
 * conversion (a small randn cost 2.5× PyTorch's through it); undefined where that path must take
 * the call (another device, an unknown dtype, any error it then words).
 */
function unboxedFactory(code: number, shape: number[], options: RandomOptions): Tensor | undefined {
  if (options.device !== undefined && options.device !== "cpu") return undefined;
  const dtypeId: unknown = binding.dtypeIds[options.dtype ?? "float32"]; // a bad name gives undefined or an Object.prototype member
  return typeof dtypeId === "number" ? callFactory<Tensor>(code, shape, dtypeId, options.generator) : undefined;
}

/** @example zeros([2, 3]) */
export function zeros(shape: number[], options: TensorOptions = {}): Tensor {
  assertShape(shape);
  return unboxedFactory(0, shape, options) ?? call("aten::zeros", [shape, ...factoryArgs(options)]);
}
/** @example ones([2, 3], { dtype: "float16" }) */
export function ones(shape: number[], options: TensorOptions = {}): Tensor {
  assertShape(shape);
  return unboxedFactory(1, shape, options) ?? call("aten::ones", [shape, ...factoryArgs(options)]);
}
/** @example full([2, 2], 7.5) */
export function full(shape: number[], value: number | boolean, options: TensorOptions = {}): Tensor {
  assertShape(shape);
  return call("aten::full", [shape, value, ...factoryArgs(options, typeof value === "boolean" ? "bool" : "float32")]);
}
/** Like torch.arange: integer arguments give int64 unless `dtype` says otherwise. @example arange(0, 10, 2) */
export function arange(start: number, end?: number, step = 1, options: TensorOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  const integral = [start, end, step].every(Number.isInteger);
  return call("aten::arange.start_step", [start, end, step, ...factoryArgs(options, integral ? "int64" : "float32")]);
}
/** @example linspace(0, 1, 5) */
export function linspace(start: number, end: number, steps: number, options: TensorOptions = {}): Tensor {
  return call("aten::linspace", [start, end, steps, ...factoryArgs(options)]);
}
/** Standard normal samples. @example randn([1, 4, 64, 64], { generator: new Generator(0) }) */
export function randn(shape: number[], options: RandomOptions = {}): Tensor {
  assertShape(shape);
  return unboxedFactory(2, shape, options) ?? call("aten::randn.generator", [shape, options.generator ?? null, ...factoryArgs(options)]);
}
/** Uniform samples in [0, 1). */
export function rand(shape: number[], options: RandomOptions = {}): Tensor {
  assertShape(shape);
  return unboxedFactory(3, shape, options) ?? call("aten::rand.generator", [shape, options.generator ?? null, ...factoryArgs(options)]);
}
/** Integers in [low, high) (int64 by default). @example randint(0, 1000, [4]) */
export function randint(low: number, high: number, shape: number[], options: RandomOptions = {}): Tensor {
  assertShape(shape);
  return call("aten::randint.low_generator", [low, high, shape, options.generator ?? null, ...factoryArgs(options, "int64")]);
}
/** Normal samples of `mean` and `std` (torch.normal with float mean/std). @example normal(0, 1, [8], { generator }) */
export function normal(mean: number, std: number, shape: number[], options: RandomOptions = {}): Tensor {
  assertShape(shape);
  return call("aten::normal.float_float", [mean, std, shape, options.generator ?? null, ...factoryArgs(options)]);
}
/** A random permutation of 0..n-1 (int64), as torch.randperm. @example randperm(10, { generator: new Generator(0) }) */
export function randperm(n: number, options: RandomOptions = {}): Tensor {
  assertInteger(n, "randperm n", 0);
  return call("aten::randperm.generator", [n, options.generator ?? null, ...factoryArgs(options, "int64")]);
}

const like = (t: Tensor, options: TensorOptions): Required<TensorOptions> => ({ dtype: options.dtype ?? t.dtype, device: options.device ?? t.device });
export function zerosLike(t: Tensor, options: TensorOptions = {}): Tensor { return zeros(t.shape, like(t, options)); }
export function onesLike(t: Tensor, options: TensorOptions = {}): Tensor { return ones(t.shape, like(t, options)); }
export function fullLike(t: Tensor, value: number, options: TensorOptions = {}): Tensor { return full(t.shape, value, like(t, options)); }
export function randnLike(t: Tensor, options: RandomOptions = {}): Tensor { return randn(t.shape, { ...like(t, options), generator: options.generator }); }
export function randLike(t: Tensor, options: RandomOptions = {}): Tensor { return rand(t.shape, { ...like(t, options), generator: options.generator }); }
export function randintLike(t: Tensor, low: number, high: number, options: RandomOptions = {}): Tensor {
  return randint(low, high, t.shape, { ...like(t, options), generator: options.generator });
}
