/**
 * One fuzzing process (test/fuzz.test.ts starts it): calls `count` random functions from
 * `start` on, each with arguments drawn from its own seeded generator, so call `i` of seed
 * `s` is the same call in every run and can be replayed alone.
 *
 *   node --import tsx test/helpers/fuzz-child.ts <typed|ops> <seed> <start> <count>
 *
 * Protocol on stdout, written synchronously so it survives a crash of this process:
 *   CALL <i> <label>     before call i (the parent blames the last one when the process dies)
 *   BAD <i> <label> <message as JSON>   a call threw something other than a clean Error
 *   DONE <ok> <threw>    all calls ran
 *
 * FUZZ_VERBOSE=1 also prints each op call's arguments; FUZZ_ONLY=<regex> calls only matching targets;
 * FUZZ_COMPLEX=<share> makes that share of the tensors complex64 (default 0.04).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as td from "../../lib";
import { attention, naiveAttention } from "../../lib/attention";
import * as creation from "../../lib/creation";
import { call, opNames, opSchema } from "../../lib/dispatch";
import * as functional from "../../lib/functional";
import type { Tensor } from "../../lib/tensor";

// Fuzzed ops and Module.save/serialize get random strings as paths: let them land in a scratch
// folder of this child, removed when it exits, not in the repository.
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "td-fuzz-"));
process.chdir(scratch);
process.on("exit", () => fs.rmSync(scratch, { recursive: true, force: true }));

// ---- reproducible randomness ---------------------------------------------------------------

/** mulberry32: a small seeded generator; one per call, from (seed, call index). */
export function rngFor(seed: number, index: number): () => number {
  let a = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The share of complex64 tensors (FUZZ_COMPLEX overrides it, to hunt in complex paths).
const complexShare = Number(process.env.FUZZ_COMPLEX ?? 0.04);

class Values {
  constructor(readonly random: () => number) {}

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)];
  }
  chance(p: number): boolean {
    return this.random() < p;
  }
  int(): number {
    if (this.chance(0.75)) return this.pick([0, 1, 1, 2, 2, 3, -1, -1, -2, 4, 5, 7]);
    return this.pick([64, -64, 1000, -1000, 2 ** 31 - 1, -(2 ** 31), 2 ** 32, 2 ** 40, -(2 ** 40), 2 ** 53, -(2 ** 53), 2 ** 62, -(2 ** 63), 1e18, 1e300]);
  }
  float(): number {
    return this.pick([0, 1, -1, 0.5, -0.5, 2.5, 1e-8, 1e-45, 1e30, -1e30, 1e308, NaN, Infinity, -Infinity, -0, 3]);
  }
  scalar(): number | boolean {
    return this.chance(0.1) ? this.chance(0.5) : this.chance(0.5) ? this.int() : this.float();
  }
  intList(length?: number): number[] {
    const n = length ?? this.pick([0, 1, 1, 2, 2, 3, 4]);
    return Array.from({ length: n }, () => (this.chance(0.85) ? this.pick([0, 1, 2, 3, -1, 1, 2]) : this.int()));
  }
  string(): string {
    return this.pick(["none", "mean", "sum", "tanh", "reflect", "constant", "replicate", "circular", "linear", "nearest", "bilinear", "bicubic", "ij", "xy", "floor", "trunc", "fro", "nuc", "L", "U", "reduced", "complete", "backward", "forward", "ortho", "", "x", "float32", "cpu", "cuda", "meta", "int64", "N", "C"]);
  }
  dtype(): string {
    return this.pick(["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]);
  }
  device(): string {
    return this.pick(["cpu", "cpu", "cpu", "cuda", "cuda:1", "meta", "xla", "cpu:0", "cpu:-3", "gpu", ""]);
  }
  /** A small tensor: 0-dim to 4-dim, sometimes empty, non-contiguous, expanded or requiring grad. */
  tensor(): Tensor {
    const ndim = this.pick([0, 1, 1, 2, 2, 3, 4]);
    const shape = Array.from({ length: ndim }, () => (this.chance(0.08) ? 0 : this.pick([1, 1, 2, 2, 3, 4, 5])));
    const dtype = this.dtype() as td.DType;
    const special = this.chance(0.1);
    let t: Tensor;
    if (this.chance(complexShare)) t = call<Tensor>("aten::complex", [td.randn(shape), td.randn(shape)]); // complex64
    else if (dtype === "bool") t = td.rand(shape).gt(0.5);
    else if (["int64", "int32", "int16", "int8", "uint8"].includes(dtype)) t = td.randint(dtype === "uint8" ? 0 : -5, 6, shape, { dtype });
    else t = special ? td.full(shape, this.pick([NaN, Infinity, -Infinity, 0, 1e30])).to(dtype) : td.randn(shape, { dtype });
    if (ndim >= 2 && this.chance(0.2)) t = t.transpose(0, 1);
    if (ndim >= 1 && shape[0] === 1 && this.chance(0.1)) t = t.expand([3, ...t.shape.slice(1)]);
    if ((dtype === "float32" || dtype === "float64") && this.chance(0.1)) t = t.detach().requiresGrad_();
    return t;
  }
  junk(): unknown {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    let deep: unknown = [];
    for (let i = 0; i < 5000; i++) deep = [deep];
    return this.pick([null, undefined, {}, [], "x", () => 1, Symbol("s"), 10n, new Uint8Array(2), { shape: [1] }, Object.create(td.Tensor.prototype), NaN, true, [[[[]]]], [1, "a"], cyclic, deep, Buffer.from("PK\x03\x04junk")]);
  }
  options(): Record<string, unknown> {
    const keys = ["dtype", "device", "generator", "keepdim", "unbiased", "size", "scaleFactor", "mode", "alignCorners", "antialias", "stride", "padding", "dilation", "groups", "beta", "alpha", "scale", "mask", "retainGraph", "createGraph"];
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      if (!this.chance(0.15)) continue;
      out[key] =
        key === "dtype" ? (this.chance(0.9) ? this.dtype() : this.any())
        : key === "device" ? this.device()
        : key === "generator" ? (this.chance(0.7) ? new td.Generator(this.int() >>> 0) : this.any())
        : key === "mode" ? this.pick(["nearest", "bilinear", "bicubic", "nearest-exact", "x"])
        : key === "mask" ? this.tensor()
        : this.any();
    }
    return out;
  }
  /** Any value of any kind, tensors most often. */
  any(): unknown {
    const r = this.random();
    if (r < 0.35) return this.tensor();
    if (r < 0.55) return this.int();
    if (r < 0.65) return this.intList();
    if (r < 0.72) return this.float();
    if (r < 0.76) return this.chance(0.5);
    if (r < 0.82) return this.options();
    if (r < 0.87) return this.string();
    if (r < 0.92) return Array.from({ length: this.pick([0, 1, 2, 3]) }, () => this.tensor());
    return this.junk();
  }
}

// ---- the typed API: Tensor methods, functional.ts, creation.ts, attention ----------------------

interface Target {
  label: string;
  run(values: Values): unknown;
}

function typedTargets(): Target[] {
  const targets: Target[] = [];
  const skip = new Set(["constructor"]);
  for (const proto of [td.Tensor.prototype, Object.getPrototypeOf(td.Tensor.prototype)]) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (skip.has(name)) continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, name)!;
      if (typeof descriptor.value === "function") {
        const fn = descriptor.value as (...args: unknown[]) => unknown;
        targets.push({ label: `Tensor.${name}`, run: (v) => fn.apply(v.tensor(), Array.from({ length: v.pick([0, 1, 1, 2, 2, 3, 4]) }, () => v.any())) });
      } else if (descriptor.set) {
        const set = descriptor.set;
        targets.push({ label: `Tensor.${name}=`, run: (v) => set.call(v.tensor(), v.any()) });
      } else if (descriptor.get) {
        const get = descriptor.get;
        targets.push({ label: `Tensor.${name}`, run: (v) => get.call(v.tensor()) });
      }
    }
  }
  // Modules and generators: a fresh one per call, since dispose() and setParameter() change them.
  const fixtures = path.join(__dirname, "..", "fixtures", "modules");
  for (const proto of [td.Module.prototype, Object.getPrototypeOf(td.Module.prototype), td.Generator.prototype, Object.getPrototypeOf(td.Generator.prototype)]) {
    const isModule = proto === td.Module.prototype || proto === Object.getPrototypeOf(td.Module.prototype);
    for (const name of Object.getOwnPropertyNames(proto)) {
      const descriptor = Object.getOwnPropertyDescriptor(proto, name)!;
      if (name === "constructor" || typeof descriptor.value !== "function") continue;
      const fn = descriptor.value as (...args: unknown[]) => unknown;
      const self = (v: Values) => (isModule ? td.load(path.join(fixtures, v.pick(["echo.pt", "tiny_conv.pt"]))) : new td.Generator(v.int() >>> 0));
      const arg = (v: Values) => (v.chance(0.3) ? v.pick(["forward", "weight", "conv.weight", "offset", "bias", "", "training", "x.y"]) : v.any());
      targets.push({ label: `${isModule ? "Module" : "Generator"}.${name}`, run: (v) => fn.apply(self(v), Array.from({ length: v.pick([0, 1, 1, 2, 3]) }, () => arg(v))) });
    }
  }
  const io = { serialize: td.serialize, deserialize: (bytes: unknown) => td.deserialize(bytes as Buffer), roundTrip: (value: unknown) => td.deserialize(td.serialize(value)) };
  const modules: [string, Record<string, unknown>][] = [["functional", functional], ["creation", creation], ["attention", { attention, naiveAttention }], ["serialize", io]];
  for (const [module, exports] of modules) {
    for (const [name, value] of Object.entries(exports)) {
      if (typeof value !== "function") continue;
      const fn = value as (...args: unknown[]) => unknown;
      targets.push({ label: `${module}.${name}`, run: (v) => fn(...Array.from({ length: v.pick([1, 2, 2, 3, 3, 4, 5]) }, () => v.any())) });
    }
  }
  return targets;
}

// ---- the op surface: every registered op, arguments of its schema's kinds ----------------------

interface Param {
  type: string; // without alias annotations, e.g. "int[2]", "Tensor?"
  hasDefault: boolean;
}

/** `aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor` -> its parameters. */
export function parseSchema(schema: string): Param[] {
  const open = schema.indexOf("(");
  let depth = 0;
  let close = open;
  for (let i = open; i < schema.length; i++) {
    if (schema[i] === "(") depth++;
    if (schema[i] === ")" && --depth === 0) {
      close = i;
      break;
    }
  }
  const params: Param[] = [];
  let current = "";
  depth = 0;
  for (const ch of schema.slice(open + 1, close) + ",") {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      const text = current.trim();
      current = "";
      if (!text || text === "*") continue;
      const [declaration] = text.split("=");
      const type = declaration.trim().split(/\s+/).slice(0, -1).join(" ").replace(/\([^)]*\)/g, "");
      params.push({ type, hasDefault: text.includes("=") });
      continue;
    }
    current += ch;
  }
  return params;
}

function valueOfType(v: Values, type: string): unknown {
  if (v.chance(0.05)) return v.any(); // the wrong kind
  if (type.endsWith("?")) return v.chance(0.25) ? null : valueOfType(v, type.slice(0, -1));
  const list = /^(.*)\[(\d*)\]$/.exec(type);
  if (list) {
    const n = list[2] ? Number(list[2]) : v.pick([0, 1, 2, 2, 3, 4]);
    if (list[1] === "int" || list[1] === "SymInt") return v.chance(0.2) ? v.int() : v.intList(v.chance(0.8) ? n : undefined);
    return Array.from({ length: n }, () => valueOfType(v, list[1]));
  }
  switch (type) {
    case "Tensor": return v.chance(0.97) ? v.tensor() : null;
    case "int":
    case "SymInt": return v.int();
    case "float": return v.float();
    case "bool": return v.chance(0.5);
    case "Scalar": return v.scalar();
    case "ScalarType": return v.chance(0.7) ? v.dtype() : v.pick([0, 4, 6, 11, 15, 5, 8, 12, 17, 18, 19, 20, 25, -1, 127, 1000]);
    case "Layout": return v.pick([0, 0, 0, "strided", 1, 2, 3, 7, -1, 99]);
    case "MemoryFormat": return v.pick([0, 1, 2, 3, "channels_last", 4, -1, 99]);
    case "Device": return v.device();
    case "str":
    case "Dimname": return v.string();
    case "Generator": return new td.Generator(v.int() >>> 0);
    default: return v.any(); // Any, t, Storage, Stream, custom classes
  }
}

function opTargets(): Target[] {
  return opNames().map((name) => {
    let params: Param[] | undefined;
    return {
      label: name,
      run: (v) => {
        params ??= parseSchema(opSchema(name));
        const args: unknown[] = [];
        for (const param of params) {
          if (param.hasDefault && v.chance(0.5)) break; // the rest take their defaults
          args.push(valueOfType(v, param.type));
        }
        if (process.env.FUZZ_VERBOSE) line(`ARGS ${show(args)}`);
        return call(name, args);
      },
    };
  });
}

/** Arguments as text, for replaying one call with FUZZ_VERBOSE=1. */
function show(value: unknown): string {
  if (value instanceof td.Tensor) return value.isDisposed ? "disposed" : `T[${value.shape.join(",")}] ${value.dtype}${value.isContiguous() ? "" : " strided"}`;
  if (Array.isArray(value)) return `[${value.map(show).join(", ")}]`;
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  return typeof value === "object" ? `{${Object.entries(value as object).map(([k, v]) => `${k}: ${show(v)}`).join(", ")}}` : typeof value;
}

// ---- the run ---------------------------------------------------------------------------------

/** Reads a result back, as a caller would: shapes, values, nested containers. */
function touch(result: unknown, depth = 0): void {
  if (depth > 3 || result === null || typeof result !== "object") return;
  if (result instanceof td.Tensor) {
    if (result.isDisposed) return;
    void result.shape;
    void result.dtype;
    if (result.numel <= 1e6) {
      try {
        result.data();
      } catch {
        // complex and other dtypes without a TypedArray say so
      }
    }
    return;
  }
  if (Array.isArray(result)) for (const item of result) touch(item, depth + 1);
}

function line(text: string): void {
  fs.writeSync(1, text + "\n");
}

function main(): void {
  const [surface, seedText, startText, countText] = process.argv.slice(2);
  const seed = Number(seedText);
  const start = Number(startText);
  const count = Number(countText);
  // FUZZ_ONLY=<regex> narrows the run to the targets it matches, e.g. FUZZ_ONLY=_nested_ for one family.
  const only = process.env.FUZZ_ONLY ? new RegExp(process.env.FUZZ_ONLY) : null;
  const targets = (surface === "ops" ? opTargets() : typedTargets()).filter((t) => !only || only.test(t.label));
  let ok = 0;
  let threw = 0;
  for (let i = start; i < start + count; i++) {
    const values = new Values(rngFor(seed, i));
    const target = values.pick(targets);
    line(`CALL ${i} ${target.label}`);
    try {
      td.tidy(() => {
        touch(target.run(values));
      });
      ok++;
    } catch (error) {
      threw++;
      const message = error instanceof Error ? error.message : String(error);
      if (!(error instanceof Error) || message.length < 5 || /Exception raised from|frame #0/.test(message)) {
        line(`BAD ${i} ${target.label} ${JSON.stringify(message.slice(0, 300))}`);
      }
    }
  }
  line(`DONE ${ok} ${threw}`);
}

if (require.main === module) main();
