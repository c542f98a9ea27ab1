/**
 * The recipe of the built-in class-conditional DiT (`npm run train:builtin-dit`), Peebles & Xie
 * (2023) at our scale: a pixel-space DiT on Fashion-MNIST 32×32 (1 channel; by default patch 4,
 * depth 6, width 96: 1.24M parameters, 0.048 Gflops per image; adaLN-Zero initialization),
 * learned sigma trained with improved DDPM's hybrid loss (L_simple + 0.001·L_vlb, the variance
 * head only through L_vlb), linear β over 1000 steps, label dropout 10% for classifier-free
 * guidance, AdamW without weight decay at a constant learning rate after a warmup, EMA weights
 * shipped. Sampling: DDPM with the learned-range variance (model_index.json's defaults).
 *
 *   /usr/bin/python3 scripts/build_dit_init.py [--depth 6 --width 96 --patch 4] [--out build/dit-init]
 *   npx tsx scripts/train-builtin-dit.ts [--steps 15000] [--minutes M] [--batch 32] [--lr 3e-4]
 *       [--init build/dit-init] [--work build/dit-train] [--out models/builtin-dit] [--export-only]
 *
 * Checkpoints go to --work every 100 steps; rerunning resumes from the newest (exactly: the same
 * losses as an uninterrupted run). `--minutes` stops early with a checkpoint so a run fits a time
 * budget. The same script trains the sizes of the FD-versus-compute study (README), each with its
 * own --init/--work/--out.
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import * as td from "../lib";
import { trainClassConditional } from "./class_conditional_train";

const root = path.resolve(__dirname, "..");

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: "string", default: "15000" },
      minutes: { type: "string" },
      batch: { type: "string", default: "32" },
      lr: { type: "string", default: "3e-4" },
      warmup: { type: "string", default: "500" },
      ema: { type: "string", default: "0.9995" },
      init: { type: "string", default: path.join(root, "build", "dit-init") },
      work: { type: "string", default: path.join(root, "build", "dit-train") },
      out: { type: "string", default: path.join(root, "models", "builtin-dit") },
      "export-only": { type: "boolean", default: false },
      threads: { type: "string" },
    },
  });
  if (values.threads) td.setNumThreads(Number(values.threads));
  const loss = td.hybridLoss();
  await trainClassConditional({
    init: values.init!, work: values.work!, out: values.out!,
    steps: Number(values.steps), minutes: values.minutes ? Number(values.minutes) : undefined, batchSize: Number(values.batch),
    lr: Number(values.lr), warmupSteps: Number(values.warmup), emaDecay: Number(values.ema),
    objective: "epsilon", noiseSchedule: { betaSchedule: "linear", betaStart: 0.0001, betaEnd: 0.02, numTrainTimesteps: 1000 }, loss,
    dataset: new td.FashionMNIST({ split: "train", pad32: true }),
    terms: () => loss.last && { mse: loss.last.mse, vlb: loss.last.vlb },
    recipe: { recipe: "scripts/train-builtin-dit.ts", init: `scripts/build_dit_init.py (see ${path.relative(root, path.resolve(values.init!, "compute.json"))})`, loss: "hybrid: L_simple + 0.001 * L_vlb (improved DDPM)" },
    exportOnly: values["export-only"],
  });
}

main().catch((error) => {
  console.error(`train-builtin-dit: ${error instanceof Error ? error.message : error}`);
  process.exit(1);
});
