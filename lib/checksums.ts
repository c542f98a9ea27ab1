/**
 * SHA-256 records of the files this package writes (model directories, training checkpoints),
 * checked when they are read back, so a flipped byte or a truncated copy is an error naming
 * the file instead of a model that silently draws something else.
 *
 * A model directory's record is `checksums.sha256` at its root in `sha256sum` format
 * (`<hex>  <relative path>` per line, so `sha256sum -c checksums.sha256` checks it too); a
 * single file's record is a `<file>.sha256` beside it. Directories and files without a record
 * (exported elsewhere, written by hand) load unchecked.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "./serialize";

/** The record file at a model directory's root. */
export const CHECKSUMS_FILE = "checksums.sha256";
const CHUNK = 4 * 1024 * 1024;

/**
 * The SHA-256 of a file, hex.
 * @example sha256File("models/builtin/unet/model.pt") // "3f1a..."
 */
export function sha256File(file: string): string {
  const hash = createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    const buffer = Buffer.allocUnsafe(CHUNK);
    for (let read; (read = fs.readSync(fd, buffer, 0, CHUNK, null)) > 0; ) hash.update(buffer.subarray(0, read));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest("hex");
}

/** Files of a directory, relative, sorted: no dotfiles (temp files), no checkpoints, no record. */
function recordedFiles(dir: string, sub = ""): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
    const rel = sub ? `${sub}/${entry.name}` : entry.name;
    if (entry.name.startsWith(".") || rel === CHECKSUMS_FILE || rel === "checkpoints") continue;
    if (entry.isDirectory()) out.push(...recordedFiles(dir, rel));
    else if (entry.isFile()) out.push(rel);
  }
  return out.sort();
}

/**
 * Writes `checksums.sha256` for every file of a model directory (atomically).
 * @example writeDirectoryChecksums("my-model");
 */
export function writeDirectoryChecksums(dir: string): void {
  const lines = recordedFiles(dir).map((rel) => `${sha256File(path.join(dir, rel))}  ${rel}`);
  writeFileAtomic(path.join(dir, CHECKSUMS_FILE), `${lines.join("\n")}\n`);
}

function parseRecord(file: string): Map<string, string> {
  const entries = new Map<string, string>();
  for (const [i, line] of fs.readFileSync(file, "utf8").split("\n").entries()) {
    if (line.trim() === "") continue;
    const match = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!match) throw new Error(`${file}:${i + 1}: not a sha256sum line: ${JSON.stringify(line)}`);
    entries.set(match[2], match[1]);
  }
  return entries;
}

function mismatch(file: string, expected: string, actual: string): Error {
  return new Error(
    `${file} does not match its recorded SHA-256 (expected ${expected.slice(0, 16)}…, got ${actual.slice(0, 16)}…): ` +
      "the file is damaged or was changed after it was written (verify: false / --no-verify loads it anyway)",
  );
}

/**
 * Checks the files of a model directory against its `checksums.sha256` (when it has one):
 * those under `only` (relative folder or file names; default all). Throws naming the first
 * damaged file.
 * @example verifyDirectoryChecksums("my-model", ["unet", "model_index.json"]);
 */
export function verifyDirectoryChecksums(dir: string, only?: string[]): void {
  const record = path.join(dir, CHECKSUMS_FILE);
  if (!fs.existsSync(record)) return;
  for (const [rel, expected] of parseRecord(record)) {
    if (only && !only.some((o) => rel === o || rel.startsWith(`${o}/`))) continue;
    const file = path.join(dir, rel);
    if (!fs.existsSync(file)) throw new Error(`${file} is listed in ${record} but missing`);
    const actual = sha256File(file);
    if (actual !== expected) throw mismatch(file, expected, actual);
  }
}

/**
 * Writes `<file>.sha256` beside a file (atomically).
 * @example writeFileChecksum("runs/a/checkpoint-00000100.pt");
 */
export function writeFileChecksum(file: string): void {
  writeFileAtomic(`${file}.sha256`, `${sha256File(file)}  ${path.basename(file)}\n`);
}

/**
 * Checks a file against `<file>.sha256` when there is one.
 * @example verifyFileChecksum("runs/a/checkpoint-00000100.pt");
 */
export function verifyFileChecksum(file: string): void {
  const record = `${file}.sha256`;
  if (!fs.existsSync(record)) return;
  const expected = parseRecord(record).get(path.basename(file));
  if (expected === undefined) throw new Error(`${record} holds no line for ${path.basename(file)}`);
  const actual = sha256File(file);
  if (actual !== expected) throw mismatch(file, expected, actual);
}
