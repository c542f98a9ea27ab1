/**
 * Tensor: a libtorch tensor held from JS. Every method is a typed wrapper over the one
 * generic op path (dispatch.ts); results are new tensors unless the name ends in `_`
 * (in place, returns `this`). Free tensors with `dispose()`, `using`, or `tidy()`.
 */
import type { DType, TypedArray } from "./binding";
import { call, setTensorFromHandle } from "./dispatch";
import { assertInteger, invalid } from "./errors";
import { binding } from "./native";
import { setTensorPredicate, track } from "./scope";

export type { DType, TypedArray } from "./binding";
export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | Scalar;

/** Where a Tensor keeps its slot in the addon's tensor table (native/tensor.h); -1 once disposed. */
const HANDLE = Symbol("torch-diffusion tensor handle");
/** Only the factories construct tensors: a second owner of a slot would free it twice. */
const FROM_ADDON = Symbol("torch-diffusion tensor from the addon");
/**
 * The GC safety net: frees the slot of a tensor nobody disposed once it is collected. dispose()
 * does not unregister (an unregister token costs more than the rest of a small op's JS side);
 * the addon ignores the handle of a slot freed since, which the handle's generation tells.
 */
const collected = new FinalizationRegistry<number>((handle) => binding.releaseTensor(handle));
/**
 * `Symbol.dispose` (Node before 20.4 lacks it: Node's own key then), for `using` declarations.
 * Typed as `typeof Symbol.dispose`, the well-known unique symbol, so `[disposeSymbol]()` is the
 * `[Symbol.dispose]()` method TypeScript's `using` looks for (a plain `symbol` would not be).
 */
export const disposeSymbol: typeof Symbol.dispose = ((Symbol as { dispose?: symbol }).dispose ?? Symbol.for("nodejs.dispose")) as typeof Symbol.dispose;

const isTensorOrScalarScalar = (v: unknown): v is Scalar => typeof v === "number" || typeof v === "boolean";

/** `aten::<name>.Tensor` or `aten::<name>.Scalar` by the kind of `other`. */
function binary(name: string, self: Tensor, other: TensorOrScalar, extra: unknown[] = []): Tensor {
  if (isTensorOrScalarScalar(other)) return call(`aten::${name}.Scalar`, [self, other, ...extra]);
  return call(`aten::${name}.Tensor`, [self, other, ...extra]);
}

/**
 * add (code 0) / sub (1) / mul (2) / div (3), called unboxed (binding.binaryOp) where the addon
 * can; `binary` otherwise, which also words the errors. `alpha` is undefined for its default 1.
 */
function arithmetic(code: number, name: string, self: Tensor, other: TensorOrScalar, alpha?: number): Tensor {
  const out = other instanceof Tensor ? binding.binaryOp(code, self[HANDLE], other[HANDLE], alpha) : binding.binaryScalarOp(code, self[HANDLE], other, alpha);
  if (out !== undefined) return new Tensor(FROM_ADDON, out);
  return binary(name, self, other, alpha === undefined ? [] : [alpha]);
}

function dims(dim: number | number[]): number[] {
  return Array.isArray(dim) ? dim : [dim];
}

export interface ToOptions {
  dtype?: DType;
  device?: string;
}

export class Tensor {
  /** @internal */
  [HANDLE]: number;

  /** @internal Tensors come from tensor(), zeros(), randn(), ops and the other factories. */
  constructor(from: typeof FROM_ADDON, handle: number) {
    if (from !== FROM_ADDON) throw new TypeError("Tensor: tensors are created by tensor(), zeros(), randn() and the other factories, not with new");
    this[HANDLE] = handle;
    collected.register(this, handle);
    track(this);
  }

  /** Frees the tensor now; idempotent. */
  dispose(): void {
    const handle = this[HANDLE];
    if (handle < 0) return;
    this[HANDLE] = -1;
    binding.releaseTensor(handle);
  }
  get isDisposed(): boolean { return this[HANDLE] < 0; }
  get shape(): number[] { return binding.tensorShape(this[HANDLE]); }
  get dtype(): DType { return binding.tensorDtype(this[HANDLE]); }
  get device(): string { return binding.tensorDevice(this[HANDLE]); }
  get ndim(): number { return binding.tensorNdim(this[HANDLE]); }
  get numel(): number { return binding.tensorNumel(this[HANDLE]); }
  get requiresGrad(): boolean { return binding.tensorRequiresGrad(this[HANDLE]); }
  set requiresGrad(on: boolean) { binding.tensorSetRequiresGrad(this[HANDLE], on); }
  /** The gradient backward accumulated (a new handle on it each read), or null. */
  get grad(): Tensor | null { return binding.tensorGrad(this[HANDLE]) as Tensor | null; }
  set grad(value: Tensor | null) { binding.tensorSetGrad(this[HANDLE], value); }
  get isLeaf(): boolean { return binding.tensorIsLeaf(this[HANDLE]); }
  isContiguous(): boolean { return binding.tensorIsContiguous(this[HANDLE]); }
  sharesStorageWith(other: Tensor): boolean { return binding.tensorSharesStorage(this[HANDLE], other); }
  /** @internal */
  _data(dtype?: DType): TypedArray { return binding.tensorData(this[HANDLE], dtype); }

  [disposeSymbol](): void {
    this.dispose();
  }

  toString(): string {
    return this.isDisposed ? "Tensor(disposed)" : `Tensor([${this.shape.join(", ")}] ${this.dtype} ${this.device})`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }

  // ---- reading values ----------------------------------------------------------------
  /** The values as float32, row-major. @example randn([2, 2]).toFloat32Array() */
  toFloat32Array(): Float32Array {
    return this._data("float32") as Float32Array;
  }
  toFloat64Array(): Float64Array {
    return this._data("float64") as Float64Array;
  }
  /** The values in the tensor's own dtype (float16/bfloat16 as raw Uint16 bits). */
  data(): TypedArray {
    return this._data();
  }
  /** Nested JS arrays like PyTorch's `tolist()` (int64 as numbers, bool as booleans). */
  toArray(): unknown {
    const flat: (number | boolean)[] = this.dtype === "bool" ? Array.from(this._data("uint8") as Uint8Array, (v) => v !== 0) : Array.from(this._data("float64") as Float64Array);
    const shape = this.shape;
    const build = (offset: number, dim: number): unknown => {
      if (dim === shape.length) return flat[offset];
      const stride = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: shape[dim] }, (_, i) => build(offset + i * stride, dim + 1));
    };
    return build(0, 0);
  }
  /** The single value of a one-element tensor. */
  item(): number {
    return Number(binding.tensorItem(this[HANDLE]));
  }

  // ---- conversion --------------------------------------------------------------------
  /** @example x.to("float16"); x.to("cuda"); x.to({ device: "cuda", dtype: "bfloat16" }) */
  to(target: DType | string | ToOptions): Tensor {
    const options: ToOptions = typeof target === "string" ? (isDtype(target) ? { dtype: target } : { device: target }) : target;
    if (options.device !== undefined) return call("aten::to.device", [this, options.device, options.dtype ?? this.dtype, false, false]);
    return call("aten::to.dtype", [this, options.dtype ?? this.dtype, false, false]);
  }
  float(): Tensor { return this.to("float32"); }
  double(): Tensor { return this.to("float64"); }
  half(): Tensor { return this.to("float16"); }
  long(): Tensor { return this.to("int64"); }
  cpu(): Tensor { return this.to({ device: "cpu" }); }
  cuda(index = 0): Tensor { return this.to({ device: `cuda:${index}` }); }
  clone(): Tensor { return call("aten::clone", [this]); }
  detach(): Tensor { return call("aten::detach", [this]); }
  contiguous(): Tensor { return call("aten::contiguous", [this]); }

  // ---- arithmetic (broadcasting; a number uses the Scalar overload) --------------------
  add(other: TensorOrScalar, alpha: number = 1): Tensor { return arithmetic(0, "add", this, other, alpha === 1 ? undefined : alpha); }
  sub(other: TensorOrScalar, alpha: number = 1): Tensor { return arithmetic(1, "sub", this, other, alpha === 1 ? undefined : alpha); }
  mul(other: TensorOrScalar): Tensor { return arithmetic(2, "mul", this, other); }
  div(other: TensorOrScalar): Tensor { return arithmetic(3, "div", this, other); }
  pow(exponent: TensorOrScalar): Tensor {
    return isTensorOrScalarScalar(exponent) ? call("aten::pow.Tensor_Scalar", [this, exponent]) : call("aten::pow.Tensor_Tensor", [this, exponent]);
  }
  remainder(other: TensorOrScalar): Tensor { return binary("remainder", this, other); }
  maximum(other: Tensor): Tensor { return call("aten::maximum", [this, other]); }
  minimum(other: Tensor): Tensor { return call("aten::minimum", [this, other]); }
  clamp(min: number | null, max: number | null = null): Tensor { return call("aten::clamp", [this, min, max]); }
  lerp(end: Tensor, weight: TensorOrScalar): Tensor {
    return call(isTensorOrScalarScalar(weight) ? "aten::lerp.Scalar" : "aten::lerp.Tensor", [this, end, weight]);
  }
  neg(): Tensor { return call("aten::neg", [this]); }
  abs(): Tensor { return call("aten::abs", [this]); }
  sign(): Tensor { return call("aten::sign", [this]); }
  sqrt(): Tensor { return call("aten::sqrt", [this]); }
  rsqrt(): Tensor { return call("aten::rsqrt", [this]); }
  square(): Tensor { return call("aten::square", [this]); }
  reciprocal(): Tensor { return call("aten::reciprocal", [this]); }
  exp(): Tensor { return call("aten::exp", [this]); }
  expm1(): Tensor { return call("aten::expm1", [this]); }
  log(): Tensor { return call("aten::log", [this]); }
  log1p(): Tensor { return call("aten::log1p", [this]); }
  sin(): Tensor { return call("aten::sin", [this]); }
  cos(): Tensor { return call("aten::cos", [this]); }
  tanh(): Tensor { return call("aten::tanh", [this]); }
  sigmoid(): Tensor { return call("aten::sigmoid", [this]); }
  relu(): Tensor { return call("aten::relu", [this]); }
  silu(): Tensor { return call("aten::silu", [this]); }
  gelu(approximate: "none" | "tanh" = "none"): Tensor { return call("aten::gelu", [this], { approximate }); }
  floor(): Tensor { return call("aten::floor", [this]); }
  round(): Tensor { return call("aten::round", [this]); }
  logicalNot(): Tensor { return call("aten::logical_not", [this]); }

  // ---- comparisons (bool results) -----------------------------------------------------
  eq(other: TensorOrScalar): Tensor { return binary("eq", this, other); }
  ne(other: TensorOrScalar): Tensor { return binary("ne", this, other); }
  lt(other: TensorOrScalar): Tensor { return binary("lt", this, other); }
  le(other: TensorOrScalar): Tensor { return binary("le", this, other); }
  gt(other: TensorOrScalar): Tensor { return binary("gt", this, other); }
  ge(other: TensorOrScalar): Tensor { return binary("ge", this, other); }

  // ---- reductions ---------------------------------------------------------------------
  sum(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined ? call("aten::sum", [this]) : call("aten::sum.dim_IntList", [this, dims(dim), keepdim]);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined ? call("aten::mean", [this]) : call("aten::mean.dim", [this, dims(dim), keepdim]);
  }
  /** Standard deviation; `unbiased` (default true) divides by N-1 like torch.std. */
  std(dim?: number | number[] | null, options: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return call("aten::std.correction", [this, dim == null ? null : dims(dim)], { correction: options.unbiased === false ? 0 : 1, keepdim: options.keepdim ?? false });
  }
  var(dim?: number | number[] | null, options: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return call("aten::var.correction", [this, dim == null ? null : dims(dim)], { correction: options.unbiased === false ? 0 : 1, keepdim: options.keepdim ?? false });
  }
  /** max() -> the largest value; max(dim) -> { values, indices } along `dim`. */
  max(): Tensor;
  max(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  max(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return call("aten::max", [this]);
    const [values, indices] = call<[Tensor, Tensor]>("aten::max.dim", [this, dim, keepdim]);
    return { values, indices };
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  min(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return call("aten::min", [this]);
    const [values, indices] = call<[Tensor, Tensor]>("aten::min.dim", [this, dim, keepdim]);
    return { values, indices };
  }
  amax(dim: number | number[] = [], keepdim = false): Tensor { return call("aten::amax", [this, dims(dim), keepdim]); }
  amin(dim: number | number[] = [], keepdim = false): Tensor { return call("aten::amin", [this, dims(dim), keepdim]); }
  argmax(dim: number | null = null, keepdim = false): Tensor { return call("aten::argmax", [this, dim, keepdim]); }
  argmin(dim: number | null = null, keepdim = false): Tensor { return call("aten::argmin", [this, dim, keepdim]); }
  norm(p: number = 2, dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined ? call("aten::norm.Scalar", [this, p]) : call("aten::norm.ScalarOpt_dim", [this, p, dims(dim), keepdim]);
  }
  quantile(q: number, dim: number | null = null, keepdim = false): Tensor { return call("aten::quantile.scalar", [this, q, dim, keepdim]); }
  cumsum(dim: number): Tensor { return call("aten::cumsum", [this, dim]); }
  cumprod(dim: number): Tensor { return call("aten::cumprod", [this, dim]); }
  all(): Tensor { return call("aten::all", [this]); }
  any(): Tensor { return call("aten::any", [this]); }

  // ---- shape and views ----------------------------------------------------------------
  reshape(shape: number[]): Tensor { return call("aten::reshape", [this, shape]); }
  view(shape: number[]): Tensor { return call("aten::view", [this, shape]); }
  flatten(startDim = 0, endDim = -1): Tensor { return call("aten::flatten.using_ints", [this, startDim, endDim]); }
  permute(order: number[]): Tensor { return call("aten::permute", [this, order]); }
  transpose(dim0: number, dim1: number): Tensor { return call("aten::transpose.int", [this, dim0, dim1]); }
  squeeze(dim?: number): Tensor { return dim === undefined ? call("aten::squeeze", [this]) : call("aten::squeeze.dim", [this, dim]); }
  unsqueeze(dim: number): Tensor { return call("aten::unsqueeze", [this, dim]); }
  expand(shape: number[]): Tensor { return call("aten::expand", [this, shape]); }
  expandAs(other: Tensor): Tensor { return this.expand(other.shape); }
  /** Elements start..end (exclusive) by `step` along `dim`, as a view. */
  slice(dim: number, start: number | null = null, end: number | null = null, step = 1): Tensor {
    return call("aten::slice.Tensor", [this, dim, start, end, step]);
  }
  narrow(dim: number, start: number, length: number): Tensor { return call("aten::narrow", [this, dim, start, length]); }
  /** `x[i]` along `dim` (default 0), dropping that dimension. */
  index(i: number, dim = 0): Tensor {
    assertInteger(i, "index");
    return call("aten::select.int", [this, dim, i]);
  }
  indexSelect(dim: number, index: Tensor): Tensor { return call("aten::index_select", [this, dim, index]); }
  gather(dim: number, index: Tensor): Tensor { return call("aten::gather", [this, dim, index]); }
  chunk(chunks: number, dim = 0): Tensor[] { return call("aten::chunk", [this, chunks, dim]); }
  split(size: number | number[], dim = 0): Tensor[] {
    return Array.isArray(size) ? call("aten::split_with_sizes", [this, size, dim]) : call("aten::split.Tensor", [this, size, dim]);
  }
  flip(dimsToFlip: number | number[]): Tensor { return call("aten::flip", [this, dims(dimsToFlip)]); }
  repeat(repeats: number[]): Tensor { return call("aten::repeat", [this, repeats]); }
  /** Each element (slice along `dim`) `repeats` times in a row, as torch.repeat_interleave. */
  repeatInterleave(repeats: number, dim: number): Tensor { return call("aten::repeat_interleave.self_int", [this, repeats, dim]); }
  matmul(other: Tensor): Tensor { return call("aten::matmul", [this, other]); }
  bmm(other: Tensor): Tensor { return call("aten::bmm", [this, other]); }
  softmax(dim: number): Tensor { return call("aten::softmax.int", [this, dim]); }
  logSoftmax(dim: number): Tensor { return call("aten::log_softmax.int", [this, dim]); }

  // ---- in place (return this) -------------------------------------------------------
  add_(other: TensorOrScalar, alpha: number = 1): this { return binary("add_", this, other, [alpha]) as unknown as this; }
  sub_(other: TensorOrScalar, alpha: number = 1): this { return binary("sub_", this, other, [alpha]) as unknown as this; }
  mul_(other: TensorOrScalar): this { return binary("mul_", this, other) as unknown as this; }
  div_(other: TensorOrScalar): this { return binary("div_", this, other) as unknown as this; }
  addcmul_(a: Tensor, b: Tensor, value = 1): this { return call("aten::addcmul_", [this, a, b], { value }); }
  addcdiv_(a: Tensor, b: Tensor, value = 1): this { return call("aten::addcdiv_", [this, a, b], { value }); }
  lerp_(end: Tensor, weight: TensorOrScalar): this {
    return call(isTensorOrScalarScalar(weight) ? "aten::lerp_.Scalar" : "aten::lerp_.Tensor", [this, end, weight]);
  }
  clamp_(min: number | null, max: number | null = null): this { return call("aten::clamp_", [this, min, max]); }
  copy_(source: Tensor): this { return call("aten::copy_", [this, source]); }
  zero_(): this { return call("aten::zero_", [this]); }
  fill_(value: number): this { return call("aten::fill_.Scalar", [this, value]); }

  // ---- autograd -----------------------------------------------------------------------
  /** Accumulates gradients into the leaves' `.grad`. A non-scalar output needs `gradient`. */
  backward(gradient: Tensor | null = null, options: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    binding.tensorBackward(this[HANDLE], gradient, options.retainGraph, options.createGraph ?? false);
  }
  /** Sets requiresGrad and returns this, like PyTorch's `requires_grad_()`. */
  requiresGrad_(on = true): this {
    this.requiresGrad = on;
    return this;
  }
}

const DTYPES: readonly DType[] = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"];
export function isDtype(value: unknown): value is DType {
  return DTYPES.includes(value as DType);
}

export function isTensor(value: unknown): value is Tensor {
  return value instanceof Tensor;
}

export function assertTensor(value: unknown, name: string): asserts value is Tensor {
  if (!(value instanceof Tensor)) throw invalid("Tensor", name, value);
}

const fromHandle = (handle: number): Tensor => new Tensor(FROM_ADDON, handle);
binding.setTensorFactory(fromHandle, HANDLE);
setTensorFromHandle(fromHandle);
setTensorPredicate(isTensor);

// The tensor API in one import for library code (schedulers, pipelines): `import { Tensor, randn, tidy } from "../tensor"`.
export { tensor, zeros, ones, full, arange, linspace, randn, rand, randint, normal, randperm, zerosLike, onesLike, fullLike, randnLike, randLike } from "./creation";
export { cat, stack, where } from "./functional";
export { tidy, tidyAsync, keep } from "./scope";
export { Generator } from "./random";
