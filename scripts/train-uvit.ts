/**
 * One run of the Simple Diffusion ablation (Hoogeboom et al. 2023, Tables 2 and 5 at our scale):
 * a class-conditional U-ViT in pixel space at 64×64 — the data is Fashion-MNIST padded to 32×32
 * and upsampled ×2 (bilinear) to 64×64 — v-prediction, with
 *
 *   --schedule shifted      the cosine logSNR shifted by 2·log(32/64) (the paper's "shift 64/32": the
 *                           schedule the plain cosine gives at 32×32, moved to 64×64)
 *   --schedule unshifted    the plain (truncated) cosine logSNR, tuned for 64×64 ("shift 64/64")
 *   --schedule interpolated the interpolated variant: shift 32 at high noise, 64 at low noise
 *   --multiscale            the multiscale loss (1/64)·L_64×64 + (1/32)·L_32×32 instead of the MSE
 *
 * equal steps for every run. Label dropout 10% (CFG), EMA, checkpoints and exact resume as
 * scripts/train-builtin-dit.ts. The ablation is four runs:
 *
 *   /usr/bin/python3 scripts/build_uvit_init.py                  # once: build/uvit-init
 *   npx tsx scripts/train-uvit.ts --schedule unshifted --steps N
 *   npx tsx scripts/train-uvit.ts --schedule shifted --steps N
 *   npx tsx scripts/train-uvit.ts --schedule unshifted --multiscale --steps N
 *   npx tsx scripts/train-uvit.ts --schedule shifted --multiscale --steps N
 *
 * each writing runs/uvit-<schedule>[-multiscale] (checkpoints in build/uvit-train-<same>); then
 * scripts/bench/class-quality.ts evaluates them (README).
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../lib";
import { trainClassConditional } from "./class_conditional_train";

const root = path.resolve(__dirname, "..");
const SCHEDULES = {
  shifted: { resolution: 64, baseResolution: 32, baseResolutionHigh: null },
  unshifted: { resolution: 64, baseResolution: 64, baseResolutionHigh: null },
  interpolated: { resolution: 64, baseResolution: 32, baseResolutionHigh: 64 },
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      schedule: { type: "string", default: "shifted" },
      multiscale: { type: "boolean", default: false },
      steps: { type: "string", default: "10000" },
      minutes: { type: "string" },
      batch: { type: "string", default: "32" },
      lr: { type: "string", default: "3e-4" },
      warmup: { type: "string", default: "500" },
      ema: { type: "string", default: "0.9995" },
      init: { type: "string", default: path.join(root, "build", "uvit-init") },
      work: { type: "string" },
      out: { type: "string" },
      "export-only": { type: "boolean", default: false },
      threads: { type: "string" },
    },
  });
  if (values.threads) td.setNumThreads(Number(values.threads));
  const schedule = SCHEDULES[values.schedule as keyof typeof SCHEDULES];
  if (!schedule) throw new Error(`--schedule: expected ${Object.keys(SCHEDULES).join(", ")} but got "${values.schedule}"`);
  const name = `uvit-${values.schedule}${values.multiscale ? "-multiscale" : ""}`;
  const upsampled = td.mapDataset(new td.FashionMNIST({ split: "train", pad32: true }), (sample) => ({
    ...sample,
    image: td.tidy(() => td.interpolate(sample.image.unsqueeze(0), { size: [64, 64], mode: "bilinear" }).squeeze(0).clamp(-1, 1)), // (1, 64, 64)
  }));
  const noiseSchedule: td.TrainNoiseSchedule = { betaSchedule: "shifted_cosine", numTrainTimesteps: 1000, ...schedule };
  await trainClassConditional({
    init: values.init!, work: values.work ?? path.join(root, "build", `${name}-train`), out: values.out ?? path.join(root, "runs", name),
    steps: Number(values.steps), minutes: values.minutes ? Number(values.minutes) : undefined, batchSize: Number(values.batch),
    lr: Number(values.lr), warmupSteps: Number(values.warmup), emaDecay: Number(values.ema),
    objective: "v_prediction", noiseSchedule, loss: values.multiscale ? td.multiscaleLoss({ baseResolution: 32 }) : undefined,
    dataset: upsampled,
    schedulerConfig: {
      _class_name: "DDIMScheduler", beta_schedule: "shifted_cosine", resolution: schedule.resolution, base_resolution: schedule.baseResolution,
      base_resolution_high: schedule.baseResolutionHigh, prediction_type: "v_prediction", num_train_timesteps: 1000,
    },
    recipe: {
      recipe: "scripts/train-uvit.ts", init: "scripts/build_uvit_init.py", schedule: values.schedule, multiscale: values.multiscale,
      data: "Fashion-MNIST padded to 32x32, upsampled x2 (bilinear) to 64x64",
    },
    exportOnly: values["export-only"],
  });
}

main().catch((error) => {
  console.error(`train-uvit: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
