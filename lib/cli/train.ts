/**
 * `torch-diffusion train`: parses the flags, names the data (Fashion-MNIST or a captioned
 * image folder) and calls the library's `fineTune`, which trains the U-Net and writes the new
 * model directory. Checkpoints go to `<out>/checkpoints`; rerunning the same command resumes
 * from the newest, and Ctrl-C stops after the current step with a checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { CliError, badValue, deviceOption, intOption, numberOption, stringOption, type Values } from "./args";
import { ProgressBar, resolveModelDir, type CliIO } from "./output";
import { requireDevice } from "./run";

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
  device: string;
  verify: boolean;
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
    device: deviceOption(values),
    verify: values["no-verify"] !== true,
  };
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
  const o = trainOptions(values, io);
  const td = await import("../index");
  requireDevice(td, o.device);
  const model = td.loadModel(o.dir, { device: o.device, verify: o.verify });
  try {
    try {
      model.requireTextToImage("train");
    } catch (error) {
      throw new CliError((error as Error).message);
    }
    const bar = new ProgressBar(io.stderr, "train");
    const recent: number[] = [];
    const mean = () => recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
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
      record: { data: o.data },
      signal,
      log: (line) => io.stderr.write(`train: ${line}\n`),
      onStep: ({ step, loss }) => {
        recent.push(loss);
        if (recent.length > 50) recent.shift();
        bar.update(step, o.steps);
        if (!io.stderr.isTTY && (step % o.checkpointEvery === 0 || step === o.steps)) io.stderr.write(`train: step ${step}/${o.steps} loss ${mean().toFixed(4)}\n`);
      },
    });
    bar.done();
    if (result.aborted) {
      io.stderr.write(`train: stopped at step ${result.step}; a checkpoint is in ${path.join(o.out, "checkpoints")}: rerun the same command to resume\n`);
      return 130;
    }
    const seconds = (Date.now() - started) / 1000;
    io.stderr.write(`train: ${result.step} steps in ${seconds.toFixed(1)} s, loss (mean of the last ${Math.min(50, result.losses.length)}) ${result.meanLoss.toFixed(4)}\n`);
    io.stdout.write(`${o.out}\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
