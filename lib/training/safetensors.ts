/**
 * The safetensors format (Hugging Face), read and written in TypeScript: an 8-byte
 * little-endian header length N, N bytes of UTF-8 JSON
 * `{ "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ..., "__metadata__": { str: str } }`
 * (offsets relative to the end of the header), then the raw little-endian tensor bytes.
 * Written as the `safetensors` package writes it: tensors in name order, contiguous, the
 * header padded with spaces to a multiple of 8 bytes. LoRA files
 * (`pytorch_lora_weights.safetensors`) use it; so does scripts/safetensors_io.py on the Python side.
 */
import * as fs from "node:fs";
import type { DType } from "../binding";
import { invalid } from "../errors";
import { writeFileAtomic } from "../serialize";
import { isTensor, tensor, tidy, type Tensor, type TypedArray } from "../tensor";

/** safetensors dtype names -> ours. */
const FROM_FILE: Record<string, DType> = {
  F64: "float64", F32: "float32", F16: "float16", BF16: "bfloat16",
  I64: "int64", I32: "int32", I16: "int16", I8: "int8", U8: "uint8", BOOL: "bool",
};
const TO_FILE: Partial<Record<DType, string>> = Object.fromEntries(Object.entries(FROM_FILE).map(([k, v]) => [v, k]));
const BYTES: Record<DType, number> = { float64: 8, float32: 4, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };
/** A header larger than this is refused (the Rust implementation's limit is 100 MB too). */
const MAX_HEADER = 100 * 1024 * 1024;

if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) throw new Error("safetensors: this module needs a little-endian host");

export interface SafetensorsFile {
  /** Tensors by name, on the CPU in their stored dtype; the caller disposes them. */
  tensors: Record<string, Tensor>;
  /** The `__metadata__` strings (empty when there are none). */
  metadata: Record<string, string>;
}

/** A copy of `length` bytes at `offset` as the typed array our tensor factory takes for `dtype`. */
function typedView(bytes: Buffer, offset: number, length: number, dtype: DType): TypedArray {
  const copy = new Uint8Array(length);
  copy.set(bytes.subarray(offset, offset + length));
  const buffer = copy.buffer;
  switch (dtype) {
    case "float64": return new Float64Array(buffer);
    case "float32": return new Float32Array(buffer);
    case "float16": case "bfloat16": return new Uint16Array(buffer);
    case "int64": return new BigInt64Array(buffer);
    case "int32": return new Int32Array(buffer);
    case "int16": return new Int16Array(buffer);
    case "int8": return new Int8Array(buffer);
    default: return copy; // uint8, bool
  }
}

/**
 * Reads a safetensors file (or its bytes).
 * @example const { tensors, metadata } = readSafetensors("pytorch_lora_weights.safetensors");
 */
export function readSafetensors(source: string | Buffer): SafetensorsFile {
  const who = typeof source === "string" ? `readSafetensors("${source}")` : "readSafetensors";
  if (typeof source !== "string" && !Buffer.isBuffer(source)) throw invalid("file path or Buffer", "readSafetensors source", source);
  if (typeof source === "string" && !fs.existsSync(source)) throw new Error(`${who}: no such file`);
  const bytes = typeof source === "string" ? fs.readFileSync(source) : source;
  if (bytes.length < 8) throw new Error(`${who}: ${bytes.length} bytes is too short for a safetensors header`);
  const n = Number(bytes.readBigUInt64LE(0));
  if (n > MAX_HEADER || 8 + n > bytes.length) throw new Error(`${who}: header length ${n} does not fit the file's ${bytes.length} bytes`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  } catch (error) {
    throw new Error(`${who}: the header is not JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) throw new Error(`${who}: the header is not a JSON object`);
  const { __metadata__: rawMetadata, ...entries } = header;
  const metadata: Record<string, string> = {};
  if (rawMetadata !== undefined && rawMetadata !== null) {
    if (typeof rawMetadata !== "object") throw new Error(`${who}: __metadata__ must map strings to strings`);
    for (const [k, v] of Object.entries(rawMetadata)) {
      if (typeof v !== "string") throw new Error(`${who}: __metadata__["${k}"] is not a string`);
      metadata[k] = v;
    }
  }
  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const tensors: Record<string, Tensor> = {};
  try {
    for (const [name, raw] of Object.entries(entries)) {
      const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const dtype = FROM_FILE[String(entry?.dtype)];
      if (!dtype) throw new Error(`${who}: "${name}" has dtype ${JSON.stringify(entry?.dtype)} (supported: ${Object.keys(FROM_FILE).join(", ")})`);
      const shape = entry.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`${who}: "${name}" has a bad shape ${JSON.stringify(shape)}`);
      const offsets = entry.data_offsets;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) throw new Error(`${who}: "${name}" has bad data_offsets ${JSON.stringify(offsets)}`);
      const [begin, end] = offsets as number[];
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      if (end < begin || end > dataLength || end - begin !== numel * BYTES[dtype]) {
        throw new Error(`${who}: "${name}" (${entry.dtype} [${shape}]) has data_offsets [${begin}, ${end}] that do not match its size or the file's ${dataLength} data bytes`);
      }
      tensors[name] = tensor(typedView(bytes, dataStart + begin, end - begin, dtype), shape as number[], { dtype });
    }
  } catch (error) {
    for (const t of Object.values(tensors)) t.dispose();
    throw error;
  }
  return { tensors, metadata };
}

/**
 * The bytes of a safetensors file holding `tensors` (moved to the CPU, made contiguous) and
 * optional `metadata` strings.
 * @example fs.writeFileSync("a.safetensors", safetensorsBytes({ w: randn([2, 2]) }, { format: "pt" }));
 */
export function safetensorsBytes(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Buffer {
  if (tensors === null || typeof tensors !== "object") throw invalid("record of named Tensors", "safetensors tensors", tensors);
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== "string") throw invalid("string", `safetensors metadata["${k}"]`, v);
    header.__metadata__ = metadata;
  }
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    if (!isTensor(t)) throw invalid("Tensor", `safetensors tensors["${name}"]`, t);
    const dtypeName = TO_FILE[t.dtype];
    if (!dtypeName) throw new Error(`safetensors: "${name}" has dtype ${t.dtype}, which safetensors cannot hold`);
    const data = tidy(() => (t.device === "cpu" ? t : t.cpu()).contiguous().data());
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    header[name] = { dtype: dtypeName, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  const padded = Math.ceil(Buffer.byteLength(json) / 8) * 8;
  json += " ".repeat(padded - Buffer.byteLength(json));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(padded));
  return Buffer.concat([length, Buffer.from(json, "utf8"), ...chunks]);
}

/**
 * Writes a safetensors file atomically (temp file, fsync, rename).
 * @example writeSafetensors("adapters.safetensors", lora.stateDict(), { format: "pt" });
 */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  writeFileAtomic(file, safetensorsBytes(tensors, metadata));
}
