/**
 * The shared base of the typed model wrappers (UNet, VAE, CLIP text encoders, DiT): it
 * holds the TorchScript `Module`, its diffusers/transformers `config.json` and our
 * `torch_diffusion.json`, converts a call's inputs (floating tensors to the component's
 * dtype and device, numbers to tensors) and frees those temporary copies after the call.
 */
import type { DType } from "../binding";
import { assertInteger, describe, invalid } from "../errors";
import type { Module } from "../module";
import { cat } from "../functional";
import { batchPiecesFor } from "../runtime";
import { disposeSymbol, isTensor, tensor, type Tensor } from "../tensor";

/** `torch_diffusion.json` of an exported component (written by scripts/export.py). */
export interface ComponentMeta {
  format_version: number;
  /** Our class name, e.g. "UNet2DConditionModel" (legacy "Transformer2DModel" DiT configs become "DiTTransformer2DModel"). */
  class: string;
  /** The class named by the source config. */
  source_class?: string;
  /** The TorchScript file inside the folder (default "model.pt"). */
  file?: string;
  /** The dtype the module was saved in. */
  dtype?: DType;
  fused_attention?: boolean;
  /** Custom ops the graph calls (e.g. "torch_diffusion::attention"); the addon must register them. */
  custom_ops?: string[];
  /** The exported methods' inputs and outputs (see scripts/torch_diffusion_models/signatures.py). */
  methods?: Record<string, unknown>;
  source_weights?: string;
}

/** What every wrapper's constructor needs besides the module and its config. */
export interface ComponentSpec {
  className: string;
  /** TorchScript methods the wrapper calls. */
  methods: string[];
}

const FLOATING: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

/** True for float32/float16/bfloat16/float64. @example isFloatingDtype("float16") // true */
export function isFloatingDtype(dtype: unknown): dtype is DType {
  return FLOATING.includes(dtype as DType);
}

/** Integer rows (`number[][]`) or one row (`number[]`) -> an int64 tensor on `device`. */
function intTensor(values: unknown, name: string, who: string, device: string): Tensor {
  const rows = Array.isArray(values) && values.length > 0 && Array.isArray(values[0]) ? (values as unknown[][]) : null;
  const flat: unknown[] = rows ? rows.flat() : (values as unknown[]);
  const shape = rows ? [rows.length, rows[0].length] : [flat.length];
  if (rows && rows.some((row) => !Array.isArray(row) || row.length !== shape[1])) {
    throw invalid("rectangular number[][]", `${name} of ${who}`, values);
  }
  if (flat.length === 0) throw invalid("non-empty integer array", `${name} of ${who}`, values);
  flat.forEach((v, i) => assertInteger(v, `${name}[${rows ? `${Math.floor(i / shape[1])}][${i % shape[1]}` : i}] of ${who}`));
  return tensor(BigInt64Array.from(flat as number[], BigInt), shape, { device });
}

/**
 * The inputs of one module call: converts them and frees the converted copies when the
 * call is done (the caller's own tensors are never disposed).
 * @example
 * // in a ModelComponent subclass
 * return this.invoke("MyModel.forward", "forward", (i) => [i.float(x, "x"), i.timestep(t, "t")], (out) => expectTensor(out, "MyModel.forward"));
 */
export class CallInputs {
  private readonly temps: Tensor[] = [];
  constructor(
    private readonly target: { readonly dtype: DType; readonly device: string },
    /** Prefix of argument names in messages, e.g. "UNet2DConditionModel.forward". */
    readonly who: string,
  ) {}

  private temp(t: Tensor): Tensor {
    this.temps.push(t);
    return t;
  }

  /** A floating input: a Tensor cast to the component's dtype and device. */
  float(value: unknown, name: string): Tensor {
    if (!isTensor(value)) throw invalid("Tensor", `${name} of ${this.who}`, value);
    const { dtype, device } = this.target;
    if (value.dtype === dtype && value.device === device) return value;
    return this.temp(value.to({ dtype, device }));
  }

  /** An optional floating input: `undefined`/`null` become TorchScript's None. */
  optionalFloat(value: unknown, name: string): Tensor | null {
    return value === undefined || value === null ? null : this.float(value, name);
  }

  /** A Tensor moved to the component's device, dtype kept (attention probabilities stay float32 in a float16 model). */
  onDevice(value: unknown, name: string): Tensor {
    if (!isTensor(value)) throw invalid("Tensor", `${name} of ${this.who}`, value);
    return value.device === this.target.device ? value : this.temp(value.to({ device: this.target.device }));
  }

  /** Integer ids: a Tensor (moved to the device, dtype kept) or `number[]` / `number[][]` (int64). */
  ids(value: unknown, name: string): Tensor {
    if (isTensor(value)) return value.device === this.target.device ? value : this.temp(value.to({ device: this.target.device }));
    if (!Array.isArray(value)) throw invalid("Tensor or number[][]", `${name} of ${this.who}`, value);
    return this.temp(intTensor(value, name, this.who, this.target.device));
  }

  optionalIds(value: unknown, name: string): Tensor | null {
    return value === undefined || value === null ? null : this.ids(value, name);
  }

  /**
   * A timestep as the exported modules take it: a Tensor as is; a number becomes a 0-d
   * tensor, int64 when it is an integer and float32 otherwise (as diffusers' `torch.tensor([t])`
   * before `.float()`); a `number[]` becomes a 1-d tensor by the same rule.
   */
  timestep(value: unknown, name: string): Tensor {
    if (isTensor(value)) return value;
    const values = typeof value === "number" ? [value] : value;
    if (!Array.isArray(values) || values.length === 0 || !values.every((v) => typeof v === "number" && Number.isFinite(v))) {
      throw invalid("finite number, number[] or Tensor", `${name} of ${this.who}`, value);
    }
    const shape = typeof value === "number" ? [] : [values.length];
    const device = this.target.device;
    if (values.every(Number.isInteger)) return this.temp(tensor(BigInt64Array.from(values as number[], BigInt), shape, { device }));
    return this.temp(tensor(Float32Array.from(values as number[]), shape, { device }));
  }

  /**
   * The arguments of a call on `batch` items as `pieces` argument lists over consecutive slices:
   * tensors whose first dimension is the batch, alone or in a list, are sliced (views); everything
   * else is shared.
   */
  splitBatch(args: unknown[], batch: number, pieces: number): unknown[][] {
    const size = Math.ceil(batch / pieces);
    const lists: unknown[][] = [];
    for (let start = 0; start < batch; start += size) {
      const length = Math.min(size, batch - start);
      const slice = (a: unknown): unknown => (isTensor(a) && a.ndim > 0 && a.shape[0] === batch ? this.temp(a.narrow(0, start, length)) : a);
      lists.push(args.map((a) => (Array.isArray(a) ? a.map(slice) : slice(a))));
    }
    return lists;
  }

  dispose(): void {
    for (const t of this.temps) t.dispose();
    this.temps.length = 0;
  }
}

/** The results of a split call's pieces joined along the batch (tensors, or lists of them); frees the pieces. */
function joinBatchPieces(results: unknown[], who: string): unknown {
  const join = (parts: unknown[]): unknown => {
    if (parts.every(isTensor)) return cat(parts as Tensor[], 0);
    if (parts.every((r) => Array.isArray(r) && r.length === (parts[0] as unknown[]).length)) {
      return (parts[0] as unknown[]).map((_, i) => join(parts.map((r) => (r as unknown[])[i])));
    }
    throw new Error(`${who}: the pieces of a split batch returned ${describe(parts[0])}, which cannot be joined; call setBatchParallelism(1)`);
  };
  try {
    return join(results);
  } finally {
    results.forEach(disposeResult);
  }
}

/** Disposes every tensor in a module result (a tensor or a list of them). @example disposeResult(await module.forward(x)); */
export function disposeResult(value: unknown): void {
  if (isTensor(value)) value.dispose();
  else if (Array.isArray(value)) value.forEach(disposeResult);
}

/** Checks a module result is a Tensor (else frees it and throws). @example expectTensor(await module.forward(x), "MyModel.forward") */
export function expectTensor(value: unknown, who: string): Tensor {
  if (isTensor(value)) return value;
  disposeResult(value);
  throw new Error(`${who}: expected the module to return a Tensor but it returned ${describe(value)}`);
}

/** Checks a module result is a list of at least `count` tensors. @example const [a, b] = expectTensors(out, 2, "MyModel.forward"); */
export function expectTensors(value: unknown, count: number, who: string): Tensor[] {
  if (Array.isArray(value) && value.length >= count && value.every(isTensor)) return value as Tensor[];
  disposeResult(value);
  throw new Error(`${who}: expected the module to return ${count} tensors but it returned ${describe(value)}`);
}

/**
 * A loaded network: the TorchScript module plus what is known about it. Subclasses add
 * named-argument methods (`forward({sample, timestep, ...})`) with sync twins.
 * @example
 * const unet = loadComponent("models/sd-1.5/unet");
 * unet.train();
 * const optimizer = new AdamW(unet.parameters(), { lr: 1e-5 });
 * console.log(unet.className, unet.dtype, unet.device, unet.config);
 */
export abstract class ModelComponent<C extends object = Record<string, unknown>> {
  /** The diffusers / transformers class name, e.g. "UNet2DConditionModel". */
  readonly className: string;
  /** The component's `config.json` as written by diffusers / transformers. */
  readonly config: Readonly<C>;
  /** The component's `torch_diffusion.json`. */
  readonly meta: Readonly<ComponentMeta>;
  #module: Module | null;
  #dtype: DType = "float32";
  #device = "cpu";

  protected constructor(module: Module, config: Record<string, unknown>, meta: ComponentMeta | undefined, spec: ComponentSpec) {
    const who = spec.className;
    if (module === null || typeof module !== "object" || typeof (module as Module).callMethod !== "function") {
      throw invalid("Module (from load())", `${who} module`, module);
    }
    if (config === null || typeof config !== "object" || Array.isArray(config)) throw invalid("config object", `${who} config`, config);
    if (meta !== undefined && meta.class !== spec.className && meta.source_class !== spec.className) {
      throw new Error(`${who}: torch_diffusion.json describes a ${meta.class}, not a ${spec.className}`);
    }
    const available = module.methodNames();
    const missing = spec.methods.filter((m) => !available.includes(m));
    if (missing.length > 0) {
      throw new Error(`${who}: the module has no method ${missing.map((m) => `"${m}"`).join(", ")} (methods: ${available.join(", ")})`);
    }
    this.className = spec.className;
    this.config = config as C;
    this.meta = meta ?? { format_version: 1, class: spec.className };
    this.#module = module;
    this.probe();
  }

  /** The TorchScript module, for training (parameters, train/eval) and custom calls. Throws after `dispose()`. */
  get module(): Module {
    if (this.#module === null) throw new Error(`${this.className}: used after dispose()`);
    return this.#module;
  }
  /** The dtype of the module's floating parameters; floating inputs are cast to it. */
  get dtype(): DType {
    return this.#dtype;
  }
  /** The device of the module's parameters ("cpu", "cuda:0"); inputs are moved to it. */
  get device(): string {
    return this.#device;
  }
  get training(): boolean {
    return this.module.training;
  }
  get isDisposed(): boolean {
    return this.#module === null;
  }

  /** Reads dtype and device back from the first floating parameter. */
  private probe(): void {
    const params = Object.values(this.module.namedParameters()) as Tensor[];
    const first = params.find((p) => isFloatingDtype(p.dtype));
    if (first) [this.#dtype, this.#device] = [first.dtype, first.device];
    else if (this.meta.dtype) this.#dtype = this.meta.dtype;
    for (const p of params) p.dispose();
  }

  /** @example unet.train(); ...; unet.eval(); */
  train(on = true): this {
    this.module.train(on);
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  /** The module's parameters (handles the caller owns). @example const opt = new td.AdamW(unet.parameters()); */
  parameters(): Tensor[] {
    return this.module.parameters();
  }
  namedParameters(): Record<string, Tensor> {
    return this.module.namedParameters() as Record<string, Tensor>;
  }
  /**
   * Moves or casts the module in place, and with it where inputs go.
   * @example unet.to("cuda"); vae.to({ dtype: "float32" });
   */
  to(target: string | { device?: string; dtype?: DType }): this {
    this.module.moveTo(target);
    this.probe();
    return this;
  }

  /** Releases the module's memory now (tensors handed out keep what they hold); later calls throw. */
  dispose(): void {
    this.#module?.dispose();
    this.#module = null;
  }
  [disposeSymbol](): void {
    this.dispose();
  }

  /**
   * [async] Calls `method` with inputs built by `build`, maps the result, frees the converted inputs.
   * `splitBatch` says the method is batch-first in and out (the first argument is the batch):
   * then a no-grad CPU call runs in pieces at once, as {@link setBatchParallelism} says.
   */
  protected async invoke<R>(who: string, method: string, build: (inputs: CallInputs) => unknown[], map: (out: unknown) => R, splitBatch = false): Promise<R> {
    const module = this.module;
    const inputs = new CallInputs(this, who);
    try {
      const args = build(inputs);
      const batch = splitBatch && isTensor(args[0]) && args[0].ndim > 0 ? args[0].shape[0] : 0;
      const pieces = batchPiecesFor(batch, this.device);
      if (pieces === 1) return map(await module.callMethod(method, args));
      return map(joinBatchPieces(await module.callMethodConcurrently(method, inputs.splitBatch(args, batch, pieces)), who));
    } finally {
      inputs.dispose();
    }
  }

  /** [sync] The twin of `invoke`. */
  protected invokeSync<R>(who: string, method: string, build: (inputs: CallInputs) => unknown[], map: (out: unknown) => R): R {
    const module = this.module;
    const inputs = new CallInputs(this, who);
    try {
      return map(module.callMethodSync(method, build(inputs)));
    } finally {
      inputs.dispose();
    }
  }
}

/** Checks a call's argument object. @example const a = argsObject<MyArgs>(args, "MyModel.forward", "{x, t}"); */
export function argsObject<T extends object>(value: unknown, who: string, expected: string): T {
  if (value === null || typeof value !== "object" || Array.isArray(value) || isTensor(value)) {
    throw invalid(`an object ${expected}`, `the arguments of ${who}`, value);
  }
  return value as T;
}
