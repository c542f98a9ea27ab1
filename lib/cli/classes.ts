/**
 * `generate` on class-conditional models (DiT, U-ViT): `--class 7`, `--class sneaker` or
 * `--class sneaker,bag` (ids or the model's `id2label` names) instead of a prompt. The generate
 * command routes here when `--class` is given (without `--model`, on the built-in DiT) or the model
 * directory's model_index.json lists a transformer and no U-Net; everything else goes to the
 * text-to-image runner unchanged.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { BUILTIN_DIT_MODEL_NAME } from "../models/directory";
import { CliError, schedulerClassName, stringOption, type Values } from "./args";
import { ProgressBar, printJson, resolveModelDir, secondsSince, type CliIO } from "./output";
import { runGenerate, samplingOptions, writeOutputs } from "./run";

/** True when the model directory holds a class-conditional transformer and no U-Net (read from model_index.json only). @example isClassConditionalDir("models/builtin") // false */
export function isClassConditionalDir(dir: string): boolean {
  try {
    const index = JSON.parse(fs.readFileSync(path.join(dir, "model_index.json"), "utf8"));
    return Array.isArray(index?.transformer) && !Array.isArray(index?.unet);
  } catch {
    return false;
  }
}

/**
 * `generate`: text-to-image, or class-conditional sampling with `--class` / on a DiT or U-ViT model.
 * @example await runGenerateOrClasses({ model: "models/builtin-dit", class: "sneaker" }, io);
 */
export async function runGenerateOrClasses(values: Values, io: CliIO, signal?: AbortSignal): Promise<void> {
  const given = stringOption(values, "class");
  let dir: string;
  try {
    dir = resolveModelDir(stringOption(values, "model") ?? (given === undefined ? undefined : BUILTIN_DIT_MODEL_NAME));
  } catch (error) {
    if (given === undefined) return runGenerate(values, io, signal); // its own checks come first, as before
    throw error;
  }
  const classModel = isClassConditionalDir(dir);
  if (given === undefined && !classModel) return runGenerate(values, io, signal);
  if (!classModel) throw new CliError(`--class: ${dir} is not a class-conditional model (no transformer in its model_index.json); give a --prompt instead`);
  return runClassGenerate(values, dir, io, signal);
}

async function runClassGenerate(values: Values, dir: string, io: CliIO, signal?: AbortSignal): Promise<void> {
  const started = Date.now();
  for (const option of ["prompt", "negative-prompt", "clip-skip"] as const) {
    if (values[option] !== undefined) throw new CliError(`--${option}: ${dir} is class-conditional: it takes --class (an id or a label name), not a prompt`);
  }
  const classes = stringOption(values, "class");
  const o = samplingOptions(values);
  const td = await import("../index");
  if (o.device.startsWith("cuda") && !td.cuda.isAvailable()) throw new CliError(`--device ${o.device}: CUDA is not available`);
  const className = o.scheduler === undefined ? undefined : schedulerClassName(o.scheduler, Object.keys(td.SCHEDULERS));
  const model = td.loadModel(dir, { device: o.device, verify: o.verify });
  try {
    if (className !== undefined) model.scheduler = model.newScheduler(className);
    const pipe = new td.ClassConditionalPipeline(model);
    if (classes === undefined) {
      throw new CliError(`--class is required: ${dir} is class-conditional (labels: ${Object.keys(pipe.labels).join(", ") || `ids 0-${pipe.numClasses - 1}`})`);
    }
    let labels: number[];
    try {
      labels = pipe.labelIds(classes.split(",").map((c) => c.trim()));
    } catch (error) {
      throw new CliError(`--class: ${(error as Error).message}`);
    }
    const steps = o.steps ?? model.defaults.numInferenceSteps ?? 250;
    const guidanceScale = o.guidanceScale ?? model.defaults.guidanceScale ?? 4;
    const schedulerName = model.scheduler?.className ?? "none";
    const bar = new ProgressBar(io.stderr, "generate");
    const load = secondsSince(started);
    const running = Date.now();
    let stepsRun = 0;
    let output: TD.ClassConditionalOutput;
    try {
      output = await pipe.generate({
        classLabels: labels, numImagesPerLabel: o.perPrompt, numInferenceSteps: steps, guidanceScale, width: o.width, height: o.height,
        generator: new td.Generator(o.seed), signal, onProgress: ({ step, total }) => { stepsRun = step; bar.update(step, total); },
      });
    } finally {
      bar.done();
    }
    const { images } = output;
    const [count, , height, width] = images.shape;
    const run = secondsSince(running);
    io.stderr.write(`generate: ${count} image${count > 1 ? "s" : ""} ${width}×${height} of class${labels.length > 1 ? "es" : ""} ${labels.join(", ")}, ${stepsRun} steps of ${schedulerName}, seed ${o.seed}, guidance ${guidanceScale}, ${run.toFixed(1)} s\n`);
    const writing = Date.now();
    const { images: files } = await writeOutputs(td, images, o, io);
    images.dispose();
    if (o.json) {
      printJson(io, {
        command: "generate", model: dir, images: files, grid: o.grid ?? null, classLabels: output.classLabels, seed: o.seed, steps, stepsRun,
        scheduler: schedulerName, guidanceScale, width, height,
        timings: { load, run, write: secondsSince(writing), total: secondsSince(started) },
      });
    }
  } finally {
    model.dispose();
  }
}
