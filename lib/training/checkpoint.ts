/**
 * Training checkpoints: one pickle file per save (`checkpoint-<step>.pt`, readable with
 * Python's `torch.load`), written atomically, so a killed run leaves either the previous
 * checkpoint or the new one, never half of one. Temp files a crash leaves are never
 * mistaken for checkpoints.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { OptimizerState } from "../optim";
import { verifyFileChecksum, writeFileChecksum } from "../checksums";
import { loadValue, save } from "../serialize";
import { isTensor, type Tensor } from "../tensor";
import type { LoaderPosition } from "./data";
import type { EMAState } from "./ema";

export const CHECKPOINT_FORMAT = "torch-diffusion/train-checkpoint@1";

/** Everything needed to continue a run exactly where it stopped. */
export interface TrainCheckpoint {
  format: typeof CHECKPOINT_FORMAT;
  /** Optimizer steps done. */
  step: number;
  /** Trainable parameters by name (float32 master weights under mixed precision). */
  model: Record<string, Tensor>;
  /** Module buffers by name (e.g. normalization statistics). */
  buffers: Record<string, Tensor>;
  ema: EMAState | null;
  optimizer: OptimizerState;
  /** State of the trainer's Generator (noise, timesteps, condition dropout). */
  generator: Tensor;
  /** State of the global CPU generator (dropout layers inside the model draw from it). */
  globalGenerator: Tensor;
  data: LoaderPosition;
  /** Loss of every step so far. */
  losses: number[];
  /** The settings a resumed run must share. */
  config: { objective: string; batchSize: number; gradientAccumulation: number };
}

const NAME = /^checkpoint-(\d+)\.pt$/;

/** @example checkpointFile("runs/a", 500); // "runs/a/checkpoint-00000500.pt" */
export function checkpointFile(dir: string, step: number): string {
  return path.join(dir, `checkpoint-${String(step).padStart(8, "0")}.pt`);
}

/**
 * The checkpoint files of `dir`, oldest first (temp files and other names are ignored).
 * @example listCheckpoints("runs/a").at(-1)
 */
export function listCheckpoints(dir: string): { step: number; file: string }[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, match: NAME.exec(name) }))
    .filter((e): e is { name: string; match: RegExpExecArray } => e.match !== null)
    .map((e) => ({ step: Number(e.match[1]), file: path.join(dir, e.name) }))
    .sort((a, b) => a.step - b.step);
}

/** Disposes every tensor in a loaded checkpoint. @example const c = loadCheckpoint(file); try { ... } finally { disposeCheckpoint(c); } */
export function disposeCheckpoint(value: unknown, depth = 0): void {
  if (depth > 8 || value === null || typeof value !== "object") return;
  if (isTensor(value)) return value.dispose();
  for (const item of Array.isArray(value) ? value : Object.values(value)) disposeCheckpoint(item, depth + 1);
}

/**
 * Loads and checks a checkpoint file: its SHA-256 against the `.sha256` record written with
 * it (unless `verify: false`), then its format. The caller owns (and disposes) its tensors.
 * @example const ckpt = loadCheckpoint("runs/a/checkpoint-00000500.pt"); ckpt.step; // 500
 */
export function loadCheckpoint(file: string, options: { verify?: boolean } = {}): TrainCheckpoint {
  if (options.verify !== false) {
    try {
      verifyFileChecksum(file);
    } catch (error) {
      throw new Error(`loadCheckpoint("${file}"): ${(error as Error).message}`);
    }
  }
  const value = loadValue(file) as TrainCheckpoint;
  if (typeof value !== "object" || value === null || value.format !== CHECKPOINT_FORMAT) {
    disposeCheckpoint(value);
    throw new Error(`loadCheckpoint("${file}"): not a torch-diffusion training checkpoint (format ${CHECKPOINT_FORMAT})`);
  }
  return value;
}

/**
 * The newest checkpoint of `dir` that loads; an unreadable newer file is skipped, so a
 * damaged file costs the steps since the one before it, not the run.
 * @example const latest = latestCheckpoint("runs/a"); if (latest) trainer.loadCheckpoint(latest.file);
 */
export function latestCheckpoint(dir: string): { file: string; checkpoint: TrainCheckpoint } | null {
  const errors: string[] = [];
  for (const { file } of listCheckpoints(dir).reverse()) {
    try {
      return { file, checkpoint: loadCheckpoint(file) };
    } catch (error) {
      errors.push((error as Error).message);
    }
  }
  if (errors.length > 0) throw new Error(`latestCheckpoint("${dir}"): no checkpoint loads:\n${errors.join("\n")}`);
  return null;
}

/** Writes a checkpoint atomically, with its SHA-256 record beside it. @example const c = loadCheckpoint("a.pt"); c.losses = []; saveCheckpoint(c, "b.pt"); */
export function saveCheckpoint(checkpoint: TrainCheckpoint, file: string): void {
  save(checkpoint, file);
  writeFileChecksum(file);
}

/** Keeps the newest `keep` checkpoints of `dir`, deleting older ones. @example pruneCheckpoints("runs/a", 3) */
export function pruneCheckpoints(dir: string, keep: number): void {
  const all = listCheckpoints(dir);
  for (const { file } of all.slice(0, Math.max(0, all.length - keep))) {
    fs.rmSync(file, { force: true });
    fs.rmSync(`${file}.sha256`, { force: true });
  }
}

/**
 * Deletes temp files that `replaceFileAtomic` left in `dir` when a process died mid-write
 * (`.<name>.<pid>.<time>.tmp` of a pid no longer running).
 * @example removeStaleTempFiles("runs/a")
 */
export function removeStaleTempFiles(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    const match = /^\..+\.(\d+)\.\d+\.tmp$/.exec(name);
    if (!match || Number(match[1]) === process.pid || isRunning(Number(match[1]))) continue;
    fs.rmSync(path.join(dir, name), { force: true });
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
