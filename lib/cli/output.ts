/**
 * What the command line shows and writes: the progress bar on stderr, the output file
 * names or `--json` results on stdout, and which model directory `--model` names.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { BUILTIN_MODEL_NAME, builtinModelPath, diffusersFolderMessage, isBuiltinModelName, resolveModelPath } from "../models/directory";
import { CliError } from "./args";

/** Where the CLI writes: stdout gets the written file names (or `--json` results), stderr notes and progress. @example const io: CliIO = { stdout: process.stdout, stderr: process.stderr }; */
export interface CliIO {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown; isTTY?: boolean };
}

/**
 * A one-line progress bar rewritten with \r — only when stderr is a terminal, so logs and
 * pipes stay clean: `generate [######..................] 6/30 2.51 it/s ETA 0:10`. The rate and
 * the time left are from the mean step time so far.
 * @example const bar = new ProgressBar(process.stderr, "generate"); bar.update(3, 30); bar.done();
 */
export class ProgressBar {
  private readonly started: number;
  private shown = false;

  /** `now` (milliseconds) is the clock, for tests. */
  constructor(private readonly stream: CliIO["stderr"], private readonly label: string, private readonly now: () => number = Date.now) {
    this.started = now();
  }

  update(step: number, total: number): void {
    if (!this.stream.isTTY) return;
    const width = 24;
    const filled = Math.round((width * step) / total);
    const seconds = (this.now() - this.started) / 1000;
    const rate = seconds > 0 && step > 0 ? step / seconds : 0;
    const speed = rate > 0 ? ` ${rate.toFixed(2)} it/s` : "";
    const eta = rate > 0 && step < total ? ` ETA ${formatDuration((total - step) / rate)}` : "";
    this.stream.write(`\r${this.label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${step}/${total}${speed}${eta}\x1b[K`);
    this.shown = true;
  }

  /** Clears the bar's line. */
  done(): void {
    if (this.shown) this.stream.write("\r\x1b[K");
    this.shown = false;
  }
}

/**
 * Seconds as m:ss, or h:mm:ss from an hour on.
 * @example formatDuration(75) // "1:15"
 */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  const [h, m, s] = [Math.floor(total / 3600), Math.floor((total % 3600) / 60), total % 60];
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}

/**
 * One file per image: `out.png` for one, `out-0.png, out-1.png, ...` for several.
 * @example outputPaths("img/cat.png", 2) // ["img/cat-0.png", "img/cat-1.png"]
 */
export function outputPaths(out: string, count: number): string[] {
  if (count === 1) return [out];
  const { dir, name, ext } = path.parse(out);
  return Array.from({ length: count }, (_, i) => path.join(dir, `${name}-${i}${ext}`));
}

/**
 * `--model` (a directory, or `builtin`), or the built-in model shipped in the package
 * (`<package>/models/builtin`). A Hugging Face diffusers folder fails here, before libtorch
 * loads, with one line naming `torch-diffusion convert`.
 * @example const dir = resolveModelDir(undefined);
 */
export function resolveModelDir(given: string | undefined): string {
  const name = given ?? BUILTIN_MODEL_NAME;
  const dir = resolveModelPath(name);
  if (isBuiltinModelName(name) && dir === builtinModelPath(name)) {
    if (!fs.existsSync(dir)) throw new CliError(`the built-in model "${name}" is missing from this installation (${dir}): pass --model DIR`);
    return dir;
  }
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CliError(`--model: no such model directory: ${given}`);
  const raw = diffusersFolderMessage(name);
  if (raw !== null) throw new CliError(`--model: ${raw}`);
  return dir;
}

/**
 * `--json`: one JSON object on one line of stdout.
 * @example printJson(io, { command: "generate", images: ["out.png"] });
 */
export function printJson(io: CliIO, value: Record<string, unknown>): void {
  io.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Seconds since `started` (a Date.now()), to 0.001 s, for `--json` timings. */
export function secondsSince(started: number): number {
  return Math.round(Date.now() - started) / 1000;
}

/** Fails before any model loading when an input file is missing. @example const file = requireFile("image", "in.png"); */
export function requireFile(option: string, file: string): string {
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new CliError(`--${option}: no such file: ${file}`);
  return file;
}

/** Creates the folders a file will be written into. @example ensureParent("out/run-1/image.png"); */
export function ensureParent(file: string): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
}
