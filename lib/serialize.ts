/**
 * Saving tensors and containers of them in PyTorch's pickle format (Python's
 * `torch.load` reads them). File writes are atomic: a temp file, fsync, then rename, so
 * a killed process never leaves a half-written checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { invalid } from "./errors";
import { binding } from "./native";
import { isTensor } from "./tensor";

/** Containers nested deeper than this are refused (the native converter has the same limit). */
export const MAX_NESTING = 1000;

/**
 * Refuses what cannot be saved before the native walk does, naming where: a container that
 * contains itself ("cyclic value at value.o") or nesting past MAX_NESTING levels.
 */
function assertSaveable(value: unknown, name: string): void {
  const ancestors: object[] = [];
  const visit = (item: unknown, at: string): void => {
    if (item === null || typeof item !== "object" || isTensor(item)) return;
    if (ancestors.includes(item)) throw new TypeError(`${name}: cyclic value at ${at}`);
    if (ancestors.length >= MAX_NESTING) throw new TypeError(`${name}: value nested deeper than ${MAX_NESTING} levels at ${at.slice(0, 60)}…`);
    ancestors.push(item);
    if (Array.isArray(item)) item.forEach((child, i) => visit(child, `${at}[${i}]`));
    else for (const [key, child] of Object.entries(item)) visit(child, `${at}.${key}`);
    ancestors.pop();
  };
  visit(value, "value");
}

/** Serializes tensors, numbers, strings, booleans, null, arrays and plain objects to bytes. */
export function serialize(value: unknown): Buffer {
  assertSaveable(value, "serialize");
  return binding.saveValue(value);
}

/** The inverse of `serialize` (dicts come back as plain objects, tuples/lists as arrays). */
export function deserialize(bytes: Buffer): unknown {
  if (!Buffer.isBuffer(bytes)) throw invalid("Buffer", "deserialize bytes", bytes);
  return binding.loadValue(bytes);
}

/**
 * Replaces `file` atomically: `write(temp)` fills a temp file in the same folder, which is
 * fsynced and renamed over `file`, so a crash leaves the old file or the new one, never a
 * truncated one. For writers that stream to a path (e.g. `module.save`).
 * @example replaceFileAtomic("out/unet/model.pt", (temp) => unet.save(temp));
 */
export function replaceFileAtomic(file: string, write: (temp: string) => void): void {
  const dir = path.dirname(path.resolve(file));
  fs.mkdirSync(dir, { recursive: true });
  const temp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  try {
    write(temp);
    const fd = fs.openSync(temp, "r+");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}

/** Writes `bytes` to `file` atomically (temp file in the same folder + fsync + rename). */
export function writeFileAtomic(file: string, bytes: Buffer | string): void {
  replaceFileAtomic(file, (temp) => fs.writeFileSync(temp, bytes));
}

/**
 * Saves a value (e.g. a checkpoint of tensors) to `file`, atomically.
 * @example save({ step: 10, weights: model.namedParameters() }, "ckpt.pt");
 */
export function save(value: unknown, file: string): void {
  writeFileAtomic(file, serialize(value));
}

/**
 * Loads what `save` wrote (or what Python wrote with `torch.save(..., _use_new_zipfile_serialization=True)` of plain containers).
 * @example const ckpt = loadValue("ckpt.pt") as { step: number };
 */
export function loadValue(file: string): unknown {
  if (!fs.existsSync(file)) throw new Error(`loadValue: no such file "${file}"`);
  try {
    return deserialize(fs.readFileSync(file));
  } catch (error) {
    throw new Error(`loadValue("${file}"): ${(error as Error).message}`);
  }
}
