/**
 * `torch-diffusion train`: parses the flags, names the data (Fashion-MNIST or a captioned
 * image folder) and calls the library's `fineTune`, which trains the U-Net (its weights or,
 * with `--lora-rank`, adapters; with `--train-text-encoder` the text encoder's too) and writes
 * the new model directory. Checkpoints go to `<out>/checkpoints`; rerunning the same command resumes
 * from the newest, and Ctrl-C stops after the current step with a checkpoint. The output holds
 * one record, `training.json` (the base model's record kept inside it as `base`); `--json`
 * prints it with the run's timings.
 *
 * Data-parallel: `--nproc-per-node N` launches N ranks of this same command on this machine
 * (./launch.ts); a process started by torchrun (or by that launcher) finds RANK, WORLD_SIZE,
 * MASTER_ADDR and MASTER_PORT in its environment, joins the group, and trains its share of each
 * `--batch` (the global batch). Rank 0 alone prints progress and results and writes the files.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { CliError, badValue, deviceOption, intOption, loraOption, numberOption, stringOption, type Values } from "./args";
import { dataParallelOption, runDataParallel } from "./launch";
import { ProgressBar, printJson, resolveModelDir, secondsSince, type CliIO } from "./output";
import { loadTextToImage } from "./run";

interface TrainCommand {
  dir: string;
  data: string;
  out: string;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  captionDropout: number;
  caption?: string;
  checkpointEvery: number;
  /** EMA decay; the written U-Net gets the averaged weights. */
  ema?: number;
  lora?: { rank: number; alpha?: number };
  trainTextEncoder: boolean;
  device: string;
  verify: boolean;
  json: boolean;
  /** Ranks to launch on this machine (1: train in this process). */
  nproc: number;
  distTimeoutMs: number;
}

function trainOptions(values: Values, io: CliIO): TrainCommand {
  const data = stringOption(values, "data", { required: true });
  if (data !== "fashion-mnist" && !(fs.existsSync(data) && fs.statSync(data).isDirectory())) {
    throw badValue("--data", "fashion-mnist or an image folder", data);
  }
  const out = path.resolve(stringOption(values, "out", { required: true }));
  const command = {
    data,
    out,
    steps: intOption(values, "steps", 1) ?? 1000,
    batchSize: intOption(values, "batch", 1) ?? 16,
    lr: numberOption(values, "lr", [0, 1]) ?? 1e-4,
    seed: intOption(values, "seed", 0) ?? 0,
    captionDropout: numberOption(values, "caption-dropout", [0, 1]) ?? 0.1,
    caption: stringOption(values, "caption"),
    checkpointEvery: intOption(values, "checkpoint-every", 1) ?? 100,
    ema: numberOption(values, "ema", [0, 1]),
    lora: loraOption(values),
    trainTextEncoder: values["train-text-encoder"] === true,
    device: deviceOption(values),
    verify: values["no-verify"] !== true,
    json: values.json === true,
    ...dataParallelOption(values),
  };
  if (command.batchSize % command.nproc !== 0) throw new CliError(`--batch ${command.batchSize} is the global batch and must be a multiple of --nproc-per-node ${command.nproc}`);
  const dir = resolveModelDir(stringOption(values, "model"));
  if (path.resolve(dir) === out) throw new CliError("--out must differ from --model: the trained model is written as a new directory");
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new CliError(`--out: ${out} exists and is not a directory`);
  return { ...command, dir };
}

/** The dataset `--data` names: Fashion-MNIST's training split or a captioned image folder, read at the model's size and channels. */
function trainingData(td: typeof TD, o: TrainCommand, model: TD.DiffusionModel): TD.Dataset {
  const size = model.sampleSize;
  const channels = model.imageChannels === 1 ? 1 : 3;
  if (o.data === "fashion-mnist") {
    if (!fs.existsSync(td.FASHION_MNIST_DIR)) throw new CliError(`--data fashion-mnist: ${td.FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist)`);
    return new td.FashionMNIST({ split: "train", pad32: size === 32, seed: o.seed });
  }
  const folder = new td.ImageFolderDataset(o.data, { resolution: size, channels, defaultCaption: o.caption });
  return td.mapDataset(folder, (sample, index) => {
    if (sample.caption === undefined) throw new CliError(`--data: ${folder.files[index]} has no caption (add captions.json, metadata.jsonl or ${path.parse(folder.files[index]).name}.txt, or pass --caption)`);
    return sample;
  });
}

/** `train`. @example await runTrain({ data: "fashion-mnist", steps: "500", out: "my-model" }, io); */
export async function runTrain(values: Values, io: CliIO, signal?: AbortSignal): Promise<number> {
  const commandStarted = Date.now();
  const o = trainOptions(values, io);
  const td = await import("../index");
  return runDataParallel(td, { ...o, command: "train", values, io, signal }, (group, device, rankIO) => trainHere(td, { ...o, device }, group, commandStarted, rankIO, signal));
}

async function trainHere(td: typeof TD, o: TrainCommand, group: TD.ProcessGroup | undefined, commandStarted: number, io: CliIO, signal?: AbortSignal): Promise<number> {
  const model = loadTextToImage(td, o, "train");
  try {
    const bar = new ProgressBar(io.stderr, "train");
    const recent: number[] = [];
    const mean = () => recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
    const load = secondsSince(commandStarted);
    const started = Date.now();
    const result = await td.fineTune(model, trainingData(td, o, model), {
      out: o.out,
      steps: o.steps,
      batchSize: o.batchSize,
      lr: o.lr,
      seed: o.seed,
      captionDropout: o.captionDropout,
      checkpointEvery: o.checkpointEvery,
      emaDecay: o.ema,
      lora: o.lora,
      trainTextEncoder: o.trainTextEncoder,
      record: { data: o.data },
      signal,
      distributed: group,
      log: (line) => io.stderr.write(`train: ${line}\n`),
      onStep: ({ step, loss }) => {
        recent.push(loss);
        if (recent.length > 50) recent.shift();
        bar.update(step, o.steps);
        if (!io.stderr.isTTY && (step % o.checkpointEvery === 0 || step === o.steps)) io.stderr.write(`train: step ${step}/${o.steps} loss ${mean().toFixed(4)}\n`);
      },
    });
    bar.done();
    const checkpoints = path.join(o.out, "checkpoints");
    const timings = () => ({ load, train: secondsSince(started), total: secondsSince(commandStarted) });
    if (result.aborted) {
      io.stderr.write(`train: stopped at step ${result.step}; a checkpoint is in ${checkpoints}: rerun the same command to resume\n`);
      if (o.json) printJson(io, { command: "train", out: null, aborted: true, step: result.step, checkpoints, timings: timings() });
      return 130;
    }
    const seconds = (Date.now() - started) / 1000;
    io.stderr.write(`train: ${result.step} steps in ${seconds.toFixed(1)} s, loss (mean of the last ${Math.min(50, result.losses.length)}) ${result.meanLoss.toFixed(4)}\n`);
    if (o.json) {
      const record = JSON.parse(fs.readFileSync(path.join(o.out, "training.json"), "utf8")) as Record<string, unknown>;
      printJson(io, { command: "train", out: o.out, aborted: false, step: result.step, resumedFrom: result.resumedFrom, meanLoss: result.meanLoss, checkpoints, timings: timings(), record });
    } else {
      io.stdout.write(`${o.out}\n`);
    }
    return 0;
  } finally {
    model.dispose();
  }
}
