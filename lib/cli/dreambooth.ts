/**
 * `torch-diffusion dreambooth`: DreamBooth on a folder of subject images (library
 * `dreambooth`). Writes `--out` as a model directory that `generate --model OUT` runs; with
 * `--lora-rank` the adapters are fused into it and also written as
 * `OUT/pytorch_lora_weights.safetensors` (diffusers' `load_lora_weights` reads it);
 * `--train-text-encoder` trains the text encoder too. Class images and checkpoints stay in OUT:
 * rerunning the same command resumes, Ctrl-C stops with a checkpoint. `--nproc-per-node N`
 * trains data-parallel as `train` does (./launch.ts): the ranks share out the class images and
 * each step's examples, and rank 0 alone prints and writes.
 *
 *   torch-diffusion dreambooth --images subject/ --class-noun sneaker --out my-sneaker --lora-rank 4
 *   torch-diffusion generate --model my-sneaker "a photo of a <identifier> sneaker"
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { CliError, badValue, deviceOption, intOption, loraOption, numberOption, stringOption, type Values } from "./args";
import { dataParallelOption, runDataParallel } from "./launch";
import { ProgressBar, printJson, resolveModelDir, secondsSince, type CliIO } from "./output";
import { loadTextToImage } from "./run";

interface DreamBoothCommand {
  dir: string;
  images: string;
  classNoun: string;
  out: string;
  identifier?: string;
  priorLossWeight: number;
  priorPreservation: boolean;
  numClassImages: number;
  lora?: { rank: number; alpha?: number };
  trainTextEncoder: boolean;
  steps: number;
  batchSize: number;
  lr?: number;
  seed: number;
  centerCrop: boolean;
  randomFlip: boolean;
  validationPrompt?: string;
  validationEvery: number;
  checkpointEvery: number;
  device: string;
  verify: boolean;
  json: boolean;
  /** Ranks to launch on this machine (1: train in this process). */
  nproc: number;
  distTimeoutMs: number;
}

function dreamboothOptions(values: Values): DreamBoothCommand {
  const images = stringOption(values, "images", { required: true });
  if (!fs.existsSync(images) || !fs.statSync(images).isDirectory()) throw badValue("--images", "a folder of images of the subject", images);
  const classNoun = stringOption(values, "class-noun", { required: true });
  const out = path.resolve(stringOption(values, "out", { required: true }));
  const identifier = stringOption(values, "identifier");
  if (identifier !== undefined && !/^\S+( \S+)*$/.test(identifier)) throw badValue("--identifier", "a word (or words) without leading or trailing spaces", identifier);
  const command = {
    images,
    classNoun,
    out,
    identifier,
    priorLossWeight: numberOption(values, "prior-loss-weight", [0, 1e6]) ?? 1,
    priorPreservation: values["no-prior-preservation"] !== true,
    numClassImages: intOption(values, "num-class-images", 1) ?? 200,
    lora: loraOption(values),
    trainTextEncoder: values["train-text-encoder"] === true,
    steps: intOption(values, "steps", 1) ?? 400,
    batchSize: intOption(values, "batch", 1) ?? 1,
    lr: numberOption(values, "lr", [0, 1]),
    seed: intOption(values, "seed", 0) ?? 0,
    centerCrop: values["center-crop"] === true,
    randomFlip: values["random-flip"] === true,
    validationPrompt: stringOption(values, "validation-prompt"),
    validationEvery: intOption(values, "validation-every", 1) ?? 100,
    checkpointEvery: intOption(values, "checkpoint-every", 1) ?? 100,
    device: deviceOption(values),
    verify: values["no-verify"] !== true,
    json: values.json === true,
    ...dataParallelOption(values),
  };
  const perStep = command.batchSize * (command.priorPreservation ? 2 : 1);
  if (perStep % command.nproc !== 0) {
    throw new CliError(`--nproc-per-node ${command.nproc}: a step's ${perStep} examples (--batch ${command.batchSize}${command.priorPreservation ? " subject + as many class images" : ""}) must split evenly over the ranks`);
  }
  const dir = resolveModelDir(stringOption(values, "model"));
  if (path.resolve(dir) === out) throw new CliError("--out must differ from --model: the trained model is written as a new directory");
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new CliError(`--out: ${out} exists and is not a directory`);
  return { ...command, dir };
}

/** `dreambooth`. @example await runDreamBooth({ images: "subject/", "class-noun": "sneaker", out: "my-sneaker" }, io); */
export async function runDreamBooth(values: Values, io: CliIO, signal?: AbortSignal): Promise<number> {
  const commandStarted = Date.now();
  const o = dreamboothOptions(values);
  const td: typeof TD = await import("../index");
  return runDataParallel(td, { ...o, command: "dreambooth", values, io, signal }, (group, device, rankIO) => dreamboothHere(td, { ...o, device }, group, commandStarted, rankIO, signal));
}

async function dreamboothHere(td: typeof TD, o: DreamBoothCommand, group: TD.ProcessGroup | undefined, commandStarted: number, io: CliIO, signal?: AbortSignal): Promise<number> {
  const model = loadTextToImage(td, o, "dreambooth");
  try {
    const load = secondsSince(commandStarted);
    let bar = new ProgressBar(io.stderr, "dreambooth class images");
    const started = Date.now();
    const recent: number[] = [];
    const mean = () => recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
    let training = false;
    let classSeconds = null as number | null; // sampling class images, when this run did
    let sampling = false;
    let trainStarted = started;
    const result = await td.dreambooth({
      model,
      instanceImages: o.images,
      classNoun: o.classNoun,
      out: o.out,
      identifier: o.identifier,
      priorPreservation: o.priorPreservation,
      priorLossWeight: o.priorLossWeight,
      numClassImages: o.numClassImages,
      lora: o.lora,
      trainTextEncoder: o.trainTextEncoder,
      distributed: group,
      steps: o.steps,
      batchSize: o.batchSize,
      lr: o.lr,
      seed: o.seed,
      centerCrop: o.centerCrop,
      randomFlip: o.randomFlip,
      validationPrompts: o.validationPrompt === undefined ? undefined : [o.validationPrompt],
      validationEvery: o.validationEvery,
      checkpointEvery: o.checkpointEvery,
      signal,
      record: { images: path.resolve(o.images) },
      log: (line) => io.stderr.write(`dreambooth: ${line}\n`),
      onClassImages: (done, total) => {
        bar.update(done, total);
        if (done < total) sampling = true;
        else {
          if (sampling) classSeconds = secondsSince(started);
          trainStarted = Date.now();
        }
      },
      onStep: ({ step, loss }) => {
        if (!training) {
          bar.done();
          bar = new ProgressBar(io.stderr, "dreambooth train");
          training = true;
        }
        recent.push(loss);
        if (recent.length > 50) recent.shift();
        bar.update(step, o.steps);
        if (!io.stderr.isTTY && (step % o.checkpointEvery === 0 || step === o.steps)) io.stderr.write(`dreambooth: step ${step}/${o.steps} loss ${mean().toFixed(4)}\n`);
      },
    }).catch((error: Error) => {
      bar.done();
      if (error.name === "AbortError") return null;
      throw error;
    });
    bar.done();
    if (result === null || result.aborted) {
      io.stderr.write(`dreambooth: stopped${result ? ` at step ${result.step}` : " while sampling class images"}; ${o.out} holds what is done: rerun the same command to resume\n`);
      return 130;
    }
    const seconds = secondsSince(trainStarted);
    const classNote = classSeconds === null ? "" : ` (and ${result.classImages.length} class images in ${classSeconds.toFixed(1)} s)`;
    io.stderr.write(
      `dreambooth: ${result.step - (result.resumedFrom ?? 0)} steps in ${seconds.toFixed(1)} s${classNote}, loss (mean of the last ${Math.min(50, result.losses.length)}) ${result.meanLoss.toFixed(4)}; ` +
        `the subject is "${result.identifier}": prompt with "${result.instancePrompt}", e.g. torch-diffusion generate --model ${o.out} "a photo of ${result.instancePrompt.replace(/^an? /, "a ")}"\n`,
    );
    if (o.json) {
      printJson(io, {
        command: "dreambooth", model: o.dir, out: o.out, identifier: result.identifier, instancePrompt: result.instancePrompt, classPrompt: result.classPrompt,
        steps: result.step, meanLoss: result.meanLoss, lora: o.lora === undefined ? null : path.join(o.out, td.LORA_WEIGHTS_FILE), trainTextEncoder: o.trainTextEncoder,
        classImages: result.classImages.length, validation: result.validation, resumedFrom: result.resumedFrom,
        timings: { load, classImages: classSeconds, train: seconds, total: secondsSince(commandStarted) },
      });
    } else {
      io.stdout.write(`${o.out}\n`);
    }
    return 0;
  } finally {
    model.dispose();
  }
}
