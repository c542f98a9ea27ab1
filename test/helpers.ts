import * as fs from "node:fs";
import * as path from "node:path";
import { expect } from "vitest";
import * as td from "../lib";
import { tensor, type Tensor } from "../lib";

export const fixtures = path.join(__dirname, "fixtures");

export interface EncodedTensor {
  shape: number[];
  dtype: string;
  values: number[];
}

export function readFixture<T>(name: string): T {
  return JSON.parse(fs.readFileSync(path.join(fixtures, name), "utf8")) as T;
}

export function fromEncoded(e: EncodedTensor): Tensor {
  return tensor(Float64Array.from(e.values), e.shape, { dtype: "float32" });
}

/** max |got - ref| / max(1, |ref|), the metric the reference README uses. */
export function maxRelativeError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(got.length).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]) / Math.max(1, Math.abs(ref[i])));
  return worst;
}

export function expectClose(got: Tensor, ref: EncodedTensor, tolerance = 1e-5): void {
  expect(got.shape).toEqual(ref.shape);
  expect(maxRelativeError(got.toFloat64Array(), ref.values)).toBeLessThanOrEqual(tolerance);
}

/**
 * Runs `fn` with environment variables set (undefined removes one) and restores them when it
 * returns, or, for a promise, when that settles.
 * @example const out = withEnv({ TORCH_DIFFUSION_CUDA_ATTENTION: "fused" }, () => td.attention(q, k, v));
 */
export function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  };
  return withSetting(() => {
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    apply(vars);
    return () => apply(saved);
  }, fn);
}

/**
 * Runs `fn` with `threads` compute threads and batch calls split into `pieces`, then restores both
 * (sync or async, like withEnv).
 * @example await withBatchPieces(2, 2, () => unet.forward(args));
 */
export function withBatchPieces<T>(threads: number, pieces: number | "auto", fn: () => T): T {
  return withSetting(() => {
    const [savedThreads, savedPieces] = [td.getNumThreads(), td.getBatchParallelism()];
    td.setNumThreads(threads);
    td.setBatchParallelism(pieces);
    return () => {
      td.setNumThreads(savedThreads);
      td.setBatchParallelism(savedPieces);
    };
  }, fn);
}

/** Applies a setting (`apply` returns its undo), runs `fn`, and undoes it when `fn` ends, returns or settles. */
function withSetting<T>(apply: () => () => void, fn: () => T): T {
  const undo = apply();
  let result: T;
  try {
    result = fn();
  } catch (error) {
    undo();
    throw error;
  }
  if (result instanceof Promise) return result.finally(undo) as T;
  undo();
  return result;
}
