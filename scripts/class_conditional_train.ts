/**
 * What the class-conditional recipes (scripts/train-builtin-dit.ts, scripts/train-uvit.ts) share:
 * train the `transformer` of an initial model directory (scripts/build_dit_init.py,
 * scripts/build_uvit_init.py) on Fashion-MNIST labels through the Trainer — label dropout 10%
 * for classifier-free guidance (the null class), EMA weights, checkpoints every 100 steps with
 * exact resume, a `--minutes` budget — then write the model directory with the EMA weights, the
 * run's recipe.json, compute.json and checksums.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as td from "../lib";

export interface ClassConditionalRun {
  /** The initial model directory's parent (holds model/ and compute.json). */
  init: string;
  /** Checkpoints. */
  work: string;
  /** The model directory to write. */
  out: string;
  steps: number;
  minutes?: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  emaDecay: number;
  objective: td.Objective;
  noiseSchedule: td.TrainNoiseSchedule;
  loss?: td.LossFn;
  dataset: td.Dataset;
  /** Written into the output's scheduler_config.json over the initial one (the schedule trained with). */
  schedulerConfig?: Record<string, unknown>;
  /** Extra numbers for the progress line (e.g. the hybrid loss's two terms). */
  terms?: () => Record<string, number> | null;
  /** What recipe.json records besides the run's own numbers. */
  recipe: Record<string, unknown>;
  exportOnly?: boolean;
}

/** Writes `weights` (name -> tensor) into a copy of the initial model directory at `out`. */
function exportModel(initModel: string, weights: Record<string, td.Tensor>, out: string, schedulerConfig?: Record<string, unknown>): void {
  fs.cpSync(initModel, out, { recursive: true, filter: (source) => !["model.pt", "checksums.sha256"].includes(path.basename(source)) }); // the weights and their record are written anew
  const module = td.load(path.join(initModel, "transformer", "model.pt"));
  td.noGrad(() => {
    for (const [name, param] of Object.entries(module.namedParameters() as Record<string, td.Tensor>)) {
      if (!weights[name]) throw new Error(`the trained weights lack ${name}`);
      param.copy_(weights[name]);
    }
  });
  module.save(path.join(out, "transformer", "model.pt"));
  module.dispose();
  if (schedulerConfig) {
    const file = path.join(out, "scheduler", "scheduler_config.json");
    const config = { ...JSON.parse(fs.readFileSync(file, "utf8")), ...schedulerConfig };
    fs.writeFileSync(file, JSON.stringify(config, null, 2) + "\n");
    const indexFile = path.join(out, "model_index.json");
    const index = JSON.parse(fs.readFileSync(indexFile, "utf8"));
    index.scheduler = ["diffusers", config._class_name];
    if (index.torch_diffusion?.components?.scheduler) index.torch_diffusion.components.scheduler.class = config._class_name;
    if (index.torch_diffusion?.defaults) index.torch_diffusion.defaults.scheduler = config._class_name;
    fs.writeFileSync(indexFile, JSON.stringify(index, null, 2) + "\n");
  }
}

/** Writes the run's recipe.json (the recipe, its numbers, `steps` trained) and compute.json into `run.out`, then its checksums. */
function writeRecord(run: ClassConditionalRun, compute: { gflops: number; parameters: number }, steps: number, extra: Record<string, unknown>): void {
  const record = {
    ...run.recipe, seed: 0, steps, batchSize: run.batchSize, lr: run.lr, warmupSteps: run.warmupSteps,
    objective: run.objective, noiseSchedule: run.noiseSchedule, emaDecay: run.emaDecay, labelDropout: 0.1,
    gflopsPerImage: compute.gflops, parameters: compute.parameters, trainingGflops: 3 * compute.gflops * run.batchSize * steps,
    libtorch: td.buildInfo.torchVersion, ...extra,
  };
  fs.writeFileSync(path.join(run.out, "recipe.json"), JSON.stringify(record, null, 2) + "\n");
  fs.writeFileSync(path.join(run.out, "compute.json"), JSON.stringify(compute, null, 2) + "\n");
  td.writeDirectoryChecksums(run.out);
}

/** Runs (or resumes) the training and writes the model directory; returns the steps done. */
export async function trainClassConditional(run: ClassConditionalRun): Promise<number> {
  const initModel = path.join(run.init, "model");
  if (!fs.existsSync(path.join(initModel, "transformer", "model.pt"))) throw new Error(`${initModel}/transformer/model.pt is missing: build the initial model first (see --help)`);
  const compute = JSON.parse(fs.readFileSync(path.join(run.init, "compute.json"), "utf8"));
  if (run.exportOnly) {
    const latest = td.latestCheckpoint(run.work);
    if (!latest) throw new Error(`no checkpoint in ${run.work}`);
    exportModel(initModel, latest.checkpoint.ema?.shadow ?? latest.checkpoint.model, run.out, run.schedulerConfig);
    writeRecord(run, compute, latest.checkpoint.step, { exportedFrom: path.basename(latest.file) });
    console.log(`exported ${run.out} from ${latest.file} (step ${latest.checkpoint.step})`);
    return latest.checkpoint.step;
  }
  const model = td.load(path.join(initModel, "transformer", "model.pt"));
  const deadline = run.minutes ? Date.now() + run.minutes * 60_000 : Infinity;
  const controller = new AbortController();
  const started = Date.now();
  let firstStep: number | null = null;
  const recent: number[] = [];
  const recentTerms: Record<string, number[]> = {};
  const result = await td.train(model, run.dataset, {
    objective: run.objective,
    noiseSchedule: run.noiseSchedule,
    loss: run.loss,
    steps: run.steps,
    batchSize: run.batchSize,
    seed: 0,
    lr: run.lr,
    lrSchedule: { kind: "constant", warmupSteps: run.warmupSteps },
    optimizer: { weightDecay: 0 },
    maxGradNorm: 1,
    ema: { decay: run.emaDecay },
    condition: td.labelCondition({ nullLabel: 10 }),
    conditionDropout: 0.1,
    checkpoint: { dir: run.work, every: 100, keep: 2 },
    resume: true,
    signal: controller.signal,
    onStep: ({ step, loss, lr }) => {
      firstStep ??= step - 1;
      recent.push(loss);
      if (recent.length > 50) recent.shift();
      for (const [k, v] of Object.entries(run.terms?.() ?? {})) {
        (recentTerms[k] ??= []).push(v);
        if (recentTerms[k].length > 50) recentTerms[k].shift();
      }
      if (step % 25 === 0) {
        const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
        const terms = Object.entries(recentTerms).map(([k, xs]) => ` ${k} ${mean(xs).toFixed(4)}`).join("");
        const seconds = (Date.now() - started) / 1000;
        console.log(`step ${step}/${run.steps} loss(avg50) ${mean(recent).toFixed(4)}${terms} lr ${lr.toExponential(2)} ${seconds.toFixed(0)}s (${(seconds / (step - firstStep!)).toFixed(2)} s/step)`);
      }
      if (Date.now() > deadline) controller.abort();
    },
  });
  const finalLoss = recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  const weights = (result.emaModel ?? model).namedParameters() as Record<string, td.Tensor>;
  exportModel(initModel, weights, run.out, run.schedulerConfig);
  const seconds = (Date.now() - started) / 1000;
  const stepsThisRun = result.step - (firstStep ?? result.step);
  const recipeFile = path.join(run.out, "recipe.json");
  const history = fs.existsSync(recipeFile) ? (JSON.parse(fs.readFileSync(recipeFile, "utf8")).history ?? []) : [];
  history.push({ steps: `${firstStep ?? result.step}-${result.step}`, seconds: Math.round(seconds), secondsPerStep: stepsThisRun ? seconds / stepsThisRun : null, threads: td.getNumThreads() });
  writeRecord(run, compute, result.step, { plannedSteps: run.steps, finalLossAvg50: finalLoss, aborted: result.aborted, history });
  console.log(`exported ${run.out} after ${result.step} steps (loss avg of last 50: ${finalLoss.toFixed(4)})${result.aborted ? "; stopped by --minutes, rerun to continue" : ""}`);
  result.emaModel?.dispose();
  model.dispose();
  return result.step;
}
