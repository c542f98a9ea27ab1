/** Shared fixtures of the training tests: the tiny denoiser, its data, and the PyTorch reference runs. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as td from "../../lib";
import * as tr from "../../lib/training";
import { fixtures, fromEncoded, readFixture, type EncodedTensor } from "../helpers";

export const modelPath = path.join(fixtures, "training", "tiny_denoiser.pt");

export interface RunRef {
  config: {
    objective: tr.Objective; seed: number; data_seed: number; batch_size: number; steps: number; lr: number; weight_decay: number;
    lr_schedule: tr.LRScheduleKind; warmup: number; max_grad_norm: number; ema_decay: number; cond_dropout: number; grad_accumulation: number;
    logit_mean?: number; logit_std?: number;
  };
  losses: number[];
  lrs: number[];
  final: Record<string, number[]>;
  ema: Record<string, number[]>;
}

export interface TrainingRefs {
  objectives: {
    x0: EncodedTensor; noise: EncodedTensor; timesteps: number[]; sigmas: number[];
    schedules: Record<string, { beta_start: number; beta_end: number; alphas_cumprod_at: number[]; noisy: EncodedTensor; epsilon: EncodedTensor; v_prediction: EncodedTensor; sample: EncodedTensor }>;
    flow: { noisy: EncodedTensor; target: EncodedTensor; model_timesteps: number[] };
    logit_normal: { seed: number; mean: number; std: number; t: number[] };
  };
  lr: { kind: tr.LRScheduleKind; lr: number; warmup: number; total: number; values: number[] }[];
  ema: { init: EncodedTensor[]; deltas: EncodedTensor[][]; cases: { options: Record<string, number | boolean>; trace: number[][][] }[] };
  fashion_mnist: { magic: number[]; length: number; rows: number; cols: number; labels: number[]; images: EncodedTensor; padded: EncodedTensor };
  data: { images: EncodedTensor; labels: number[] };
  runs: Record<string, RunRef>;
  randperm: { n: number; seed: number; epochs: number[][] };
}

export const refs = readFixture<TrainingRefs>(path.join("training", "refs.json"));

/** The 12-image synthetic dataset of the reference runs (images kept alive for the whole file). */
export function referenceDataset(): tr.Dataset {
  const images = td.keep(fromEncoded(refs.data.images));
  return tr.tensorDataset(images, { labels: refs.data.labels });
}

/** Trainer options equal to a reference run's configuration. */
export function optionsFor(c: RunRef["config"]): tr.TrainerOptions {
  return {
    objective: c.objective, steps: c.steps, batchSize: c.batch_size, seed: c.seed, dataSeed: c.data_seed, lr: c.lr,
    optimizer: { weightDecay: c.weight_decay }, lrSchedule: { kind: c.lr_schedule, warmupSteps: c.warmup }, maxGradNorm: c.max_grad_norm,
    ema: { decay: c.ema_decay }, condition: tr.labelCondition({ nullLabel: 10 }), conditionDropout: c.cond_dropout,
    gradientAccumulation: c.grad_accumulation,
    timestepSampling: c.objective === "flow_matching" ? { kind: "logit_normal", mean: c.logit_mean, std: c.logit_std } : { kind: "uniform" },
  };
}

/** Parameter values by name, as plain arrays (the handles are disposed). */
export function weights(named: Record<string, td.Tensor>, dispose = false): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(named)) {
    out[name] = Array.from(t.toFloat32Array());
    if (dispose) t.dispose();
  }
  return out;
}

export const tempDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), "td-train-"));

/** Live tensor handles once GC finalizers have freed the garbage of earlier tests (vitest runs with --expose-gc). */
export async function settledTensorCount(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 2; i++) {
    gc?.();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return td.memory().numTensors;
}
