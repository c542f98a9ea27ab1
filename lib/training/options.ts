/**
 * The trainer's options: their types, defaults (diffusers' training-script defaults where
 * there is one) and validation, so a bad option fails before any work with a message that
 * names it.
 */
import { isProcessGroup, type ProcessGroup } from "../distributed";
import { assertInteger, assertNumber, assertOneOf, invalid } from "../errors";
import type { Module } from "../module";
import type { AdamWOptions } from "../optim";
import { isTensor, type Tensor } from "../tensor";
import type { Condition } from "./conditioning";
import type { Batch } from "./data";
import type { EMAOptions } from "./ema";
import type { LRScheduleKind } from "./lr";
import { LR_SCHEDULES } from "./lr";
import { OBJECTIVES, checkTimestepSampling, type Objective, type TimestepSampling, type TrainNoiseSchedule } from "./objectives";

/** A batch as the forward call sees it: the data plus its (possibly dropped) condition. */
export interface TrainBatch extends Batch {
  /** The output of `options.condition` (undefined without one), on the model's device. */
  cond: unknown;
  /** Samples whose condition was replaced by the unconditional one. */
  drop: boolean[];
  /** The uniform draw behind each `drop` (drop = draw < conditionDropout; 1 without dropout), for conditions dropped in parts. */
  dropDraws: number[];
  /** x₀ as trained on: the batch's images on the model's device, float32 (B, C, H, W). */
  x0?: Tensor;
  /** x_t, the noisy input before any mixed-precision cast (B, C, H, W). */
  noisy?: Tensor;
  /** The drawn integer timesteps, one per sample (DDPM objectives; undefined for flow matching). */
  timesteps?: number[];
}

/**
 * Runs the denoiser on x_t. The result may be a Tensor, a tuple starting with one, or an
 * object with a `sample` Tensor (diffusers' UNet output).
 */
export type ForwardFn = (model: Module, noisyInput: Tensor, timesteps: Tensor, batch: TrainBatch) => unknown;

/**
 * The training loss of a micro-batch from the model's prediction and the objective's target
 * (both float32, (B, C, H, W)): a 0-d tensor. The default is their mean squared error.
 */
export type LossFn = (prediction: Tensor, target: Tensor, batch: TrainBatch) => Tensor;

export interface StepInfo {
  /** Optimizer steps done, this one included. */
  step: number;
  /** Mean loss of this step's micro-batches. */
  loss: number;
  /** Learning rate this step used. */
  lr: number;
  /** Gradient norm before clipping (null without clipping). */
  gradNorm: number | null;
  /** Data epoch the next batch comes from. */
  epoch: number;
}

export interface TrainerOptions {
  objective: Objective;
  /** Optimizer steps of the whole run (the LR schedule spans them). */
  steps: number;
  batchSize: number;
  /** Seed of the Generator for noise, timesteps and condition dropout. Default 0. */
  seed?: number;
  /** Seed of the data order. Default: `seed`. */
  dataSeed?: number;
  /** Shuffle the data each epoch. Default true. */
  shuffle?: boolean;
  /** DDPM-style objectives: the beta schedule. Default linear 1e-4..0.02 over 1000 steps. */
  noiseSchedule?: TrainNoiseSchedule;
  /** Default uniform; `{ kind: "logit_normal", mean: 0, std: 1 }` is SD3's choice for flow matching. */
  timestepSampling?: TimestepSampling;
  /** Flow matching: the model sees t · flowTimestepScale. Default 1000. */
  flowTimestepScale?: number;
  /** Peak learning rate. Default 1e-4. */
  lr?: number;
  lrSchedule?: { kind?: LRScheduleKind; warmupSteps?: number; numCycles?: number };
  /** AdamW settings besides lr. Default betas [0.9, 0.999], eps 1e-8, weightDecay 1e-2. */
  optimizer?: Omit<AdamWOptions, "lr">;
  /** Clip the gradient norm to this; null turns clipping off. Default 1. */
  maxGradNorm?: number | null;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulation?: number;
  /** Keep an EMA of the trained weights. Default off. */
  ema?: EMAOptions | false;
  /** Builds the model's conditioning from a batch (see labelCondition, captionCondition). */
  condition?: Condition;
  /** Fraction of samples trained unconditionally, for classifier-free guidance. Default 0. */
  conditionDropout?: number;
  /** The model call. Default `model.forwardSync(x_t, t, ...cond)`. */
  forward?: ForwardFn;
  /** Which parameters to train (by name); the rest are frozen. Default all. */
  trainable?: (name: string) => boolean;
  /**
   * Train these tensors instead of the model's parameters: leaves (requiring grad) that the
   * `forward` call uses, such as LoRA adapters (`lora.parameters()`). The Trainer optimizes,
   * clips, averages (EMA) and checkpoints them under their names but does not own them (the
   * caller disposes them). Not with `trainable` or bf16 mixed precision.
   */
  parameters?: Record<string, Tensor>;
  /** The loss of a micro-batch (e.g. DreamBooth's instance + λ·prior loss). Default: MSE. */
  loss?: LossFn;
  /**
   * "bf16": forward and backward run on a bfloat16 copy of the model while float32 master
   * weights, optimizer state and EMA stay in the given module. Default "no".
   */
  mixedPrecision?: "no" | "bf16";
  /** Save a checkpoint into `dir` every `every` steps (and when stopping); keep the newest `keep`. */
  checkpoint?: { dir: string; every: number; keep?: number };
  /** Continue from a checkpoint file, the newest in a folder, or (true) the newest in checkpoint.dir. */
  resume?: string | boolean;
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** Aborting stops the run after the current step and writes a checkpoint. */
  signal?: AbortSignal;
  /**
   * Data-parallel training over this process group (see ./ddp.ts): `batchSize` is then the
   * global batch, split evenly over the ranks; rank 0 writes the checkpoints. Default: one process.
   */
  distributed?: ProcessGroup;
}

export type ResolvedOptions = Required<Omit<TrainerOptions, "condition" | "checkpoint" | "resume" | "onStep" | "signal" | "ema" | "forward" | "trainable" | "parameters" | "loss" | "distributed">> &
  Pick<TrainerOptions, "condition" | "checkpoint" | "resume" | "onStep" | "signal" | "forward" | "trainable" | "parameters" | "loss" | "distributed"> & { ema: EMAOptions | false };

const KNOWN = new Set([
  "objective", "steps", "batchSize", "seed", "dataSeed", "shuffle", "noiseSchedule", "timestepSampling", "flowTimestepScale", "lr", "lrSchedule",
  "optimizer", "maxGradNorm", "gradientAccumulation", "ema", "condition", "conditionDropout", "forward", "trainable", "mixedPrecision",
  "checkpoint", "resume", "onStep", "signal", "parameters", "loss", "distributed",
]);

function assertFunction(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== "function") throw invalid("function", name, value);
}

/** Validates trainer options and fills in defaults. */
export function resolveOptions(o: TrainerOptions): ResolvedOptions {
  if (typeof o !== "object" || o === null) throw invalid("options object", "Trainer options", o);
  for (const key of Object.keys(o)) if (!KNOWN.has(key)) throw new Error(`Trainer: unknown option "${key}" (options: ${[...KNOWN].join(", ")})`);
  assertOneOf(o.objective, OBJECTIVES, "options.objective");
  assertInteger(o.steps, "options.steps", 1);
  assertInteger(o.batchSize, "options.batchSize", 1);
  const seed = o.seed ?? 0;
  assertInteger(seed, "options.seed", 0);
  const dataSeed = o.dataSeed ?? seed;
  assertInteger(dataSeed, "options.dataSeed", 0);
  const lr = o.lr ?? 1e-4;
  assertNumber(lr, "options.lr");
  if (lr < 0) throw invalid("non-negative number", "options.lr", lr);
  const lrSchedule = o.lrSchedule ?? {};
  if (typeof lrSchedule !== "object" || lrSchedule === null) throw invalid("object { kind, warmupSteps }", "options.lrSchedule", lrSchedule);
  if (lrSchedule.kind !== undefined) assertOneOf(lrSchedule.kind, LR_SCHEDULES, "options.lrSchedule.kind");
  if (lrSchedule.warmupSteps !== undefined) assertInteger(lrSchedule.warmupSteps, "options.lrSchedule.warmupSteps", 0);
  const timestepSampling = o.timestepSampling ?? { kind: "uniform" };
  checkTimestepSampling(timestepSampling, "options.timestepSampling");
  const flowTimestepScale = o.flowTimestepScale ?? 1000;
  assertNumber(flowTimestepScale, "options.flowTimestepScale");
  const maxGradNorm = o.maxGradNorm === undefined ? 1 : o.maxGradNorm;
  if (maxGradNorm !== null) {
    assertNumber(maxGradNorm, "options.maxGradNorm");
    if (maxGradNorm <= 0) throw invalid("positive number or null", "options.maxGradNorm", maxGradNorm);
  }
  const gradientAccumulation = o.gradientAccumulation ?? 1;
  assertInteger(gradientAccumulation, "options.gradientAccumulation", 1);
  const conditionDropout = o.conditionDropout ?? 0;
  assertNumber(conditionDropout, "options.conditionDropout");
  if (conditionDropout < 0 || conditionDropout > 1) throw invalid("number in [0, 1]", "options.conditionDropout", conditionDropout);
  if (conditionDropout > 0 && !o.condition) throw new Error("Trainer: options.conditionDropout needs options.condition (what to drop)");
  assertFunction(o.condition, "options.condition");
  assertFunction(o.forward, "options.forward");
  assertFunction(o.trainable, "options.trainable");
  assertFunction(o.onStep, "options.onStep");
  assertFunction(o.loss, "options.loss");
  if (o.parameters !== undefined) {
    const p = o.parameters;
    if (p === null || typeof p !== "object" || Array.isArray(p) || Object.keys(p).length === 0) throw invalid("non-empty record of named Tensors", "options.parameters", p);
    for (const [name, t] of Object.entries(p)) if (!isTensor(t)) throw invalid("Tensor", `options.parameters["${name}"]`, t);
    if (o.trainable) throw new Error("Trainer: options.parameters and options.trainable: give one (parameters trains exactly the tensors given)");
    if (o.mixedPrecision === "bf16") throw new Error('Trainer: options.mixedPrecision "bf16" trains a bf16 copy of the model\'s own parameters, not options.parameters');
  }
  const mixedPrecision = o.mixedPrecision ?? "no";
  assertOneOf(mixedPrecision, ["no", "bf16"] as const, "options.mixedPrecision");
  if (o.ema !== undefined && o.ema !== false && (typeof o.ema !== "object" || o.ema === null)) throw invalid("EMA options object or false", "options.ema", o.ema);
  if (o.checkpoint !== undefined) {
    const c = o.checkpoint;
    if (typeof c !== "object" || c === null || typeof c.dir !== "string" || c.dir === "") throw invalid("{ dir, every, keep }", "options.checkpoint", c);
    assertInteger(c.every, "options.checkpoint.every", 1);
    if (c.keep !== undefined) assertInteger(c.keep, "options.checkpoint.keep", 1);
  }
  if (o.resume !== undefined && typeof o.resume !== "string" && typeof o.resume !== "boolean") throw invalid("checkpoint path or boolean", "options.resume", o.resume);
  if (o.resume === true && !o.checkpoint) throw new Error("Trainer: options.resume = true needs options.checkpoint.dir");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw invalid("AbortSignal", "options.signal", o.signal);
  if (o.distributed !== undefined && (!isProcessGroup(o.distributed) || o.distributed.isDestroyed)) throw invalid("live ProcessGroup from initProcessGroup()", "options.distributed", o.distributed);
  return {
    ...o,
    seed,
    dataSeed,
    shuffle: o.shuffle ?? true,
    noiseSchedule: o.noiseSchedule ?? {},
    timestepSampling,
    flowTimestepScale,
    lr,
    lrSchedule,
    optimizer: o.optimizer ?? {},
    maxGradNorm,
    gradientAccumulation,
    ema: o.ema ?? false,
    conditionDropout,
    mixedPrecision,
  };
}
