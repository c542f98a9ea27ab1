/**
 * Learning-rate schedules as pure functions of the optimizer step, with diffusers'
 * `get_scheduler` semantics (a LambdaLR): `lrAt(k)` is the rate of the k-th update
 * (0-based), so with warmup the first update runs at lr 0 exactly as in diffusers.
 */
import { assertInteger, assertNumber, assertOneOf, invalid } from "../errors";

export const LR_SCHEDULES = ["constant", "cosine", "linear"] as const;
export type LRScheduleKind = (typeof LR_SCHEDULES)[number];

export interface LRScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  /** "constant" (diffusers' constant / constant_with_warmup), "cosine", "linear". Default "constant". */
  kind?: LRScheduleKind;
  /** Linear warmup from 0 over this many updates. Default 0. */
  warmupSteps?: number;
  /** Total updates; needed by "cosine" and "linear". */
  totalSteps?: number;
  /** Cosine waves over the decay phase (diffusers' num_cycles). Default 0.5: one half wave down to 0. */
  numCycles?: number;
}

/**
 * The multiplier of the peak rate at update `step` (diffusers' lr_lambda).
 * @example lrFactor(0, { lr: 1e-4, kind: "cosine", warmupSteps: 10, totalSteps: 100 }); // 0
 */
export function lrFactor(step: number, o: Required<Omit<LRScheduleOptions, "lr">>): number {
  const { kind, warmupSteps: warmup, totalSteps: total, numCycles } = o;
  if (step < warmup) return step / Math.max(1, warmup);
  if (kind === "constant") return 1;
  if (kind === "linear") return Math.max(0, (total - step) / Math.max(1, total - warmup));
  const progress = (step - warmup) / Math.max(1, total - warmup);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
}

/**
 * A schedule `lrAt(step)`: warmup, then constant, cosine (SGDR without restarts,
 * Loshchilov & Hutter 2017) or linear decay.
 * @example
 * const lrAt = lrSchedule({ lr: 1e-4, kind: "cosine", warmupSteps: 500, totalSteps: 10_000 });
 * lrAt(250); // 5e-5
 */
export function lrSchedule(options: LRScheduleOptions): (step: number) => number {
  if (typeof options !== "object" || options === null) throw invalid("options object", "lrSchedule options", options);
  const { lr } = options;
  assertNumber(lr, "lrSchedule lr");
  if (lr < 0) throw invalid("non-negative number", "lrSchedule lr", lr);
  const kind = options.kind ?? "constant";
  assertOneOf(kind, LR_SCHEDULES, "lrSchedule kind");
  const warmupSteps = options.warmupSteps ?? 0;
  assertInteger(warmupSteps, "lrSchedule warmupSteps", 0);
  const numCycles = options.numCycles ?? 0.5;
  assertNumber(numCycles, "lrSchedule numCycles");
  let totalSteps = options.totalSteps ?? 0;
  if (kind !== "constant" || options.totalSteps !== undefined) {
    assertInteger(totalSteps, "lrSchedule totalSteps", 1);
  } else {
    totalSteps = 0;
  }
  const resolved = { kind, warmupSteps, totalSteps, numCycles };
  return (step: number) => lr * lrFactor(step, resolved);
}
