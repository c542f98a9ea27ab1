/**
 * `torch-diffusion train`: fine-tunes a model directory's U-Net on Fashion-MNIST or an image
 * folder with the generic trainer, the text encoder frozen (as diffusers'
 * train_text_to_image.py does), and writes a new model directory.
 *
 * The objective and noise schedule come from the model's scheduler config, so the result
 * samples with the same scheduler. Checkpoints go to `<out>/checkpoints`; rerunning the same
 * command resumes from the newest, and Ctrl-C stops after the current step with a checkpoint.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as TD from "../index";
import { defaultImageSize, type TextToImageComponents } from "../pipelines/common";
import { encodeTexts } from "../pipelines/prompts";
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
  };
  const dir = resolveModelDir(stringOption(values, "model"));
  if (path.resolve(dir) === out) throw new CliError("--out must differ from --model: the trained model is written as a new directory");
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new CliError(`--out: ${out} exists and is not a directory`);
  return { ...command, dir };
}

/** What the model's scheduler config says the U-Net was trained for. */
function objectiveOf(td: typeof TD, config: Record<string, unknown>): Pick<TD.TrainerOptions, "objective" | "noiseSchedule" | "timestepSampling" | "flowTimestepScale"> {
  const numTrainTimesteps = (config.num_train_timesteps as number | undefined) ?? 1000;
  if (String(config._class_name).startsWith("FlowMatch")) {
    return { objective: "flow_matching", timestepSampling: { kind: "logit_normal" }, flowTimestepScale: numTrainTimesteps };
  }
  const objective = (config.prediction_type as string | undefined) ?? "epsilon";
  if (!(td.OBJECTIVES as readonly string[]).includes(objective)) throw new CliError(`train: the scheduler's prediction_type "${objective}" cannot be trained (${td.OBJECTIVES.join(", ")})`);
  const betaSchedule = (config.beta_schedule as string | undefined) ?? "linear";
  if (!(td.TRAIN_BETA_SCHEDULES as readonly string[]).includes(betaSchedule)) {
    throw new CliError(`train: the scheduler's beta_schedule "${betaSchedule}" cannot be trained (${td.TRAIN_BETA_SCHEDULES.join(", ")})`);
  }
  return {
    objective: objective as TD.Objective,
    noiseSchedule: {
      numTrainTimesteps,
      betaSchedule: betaSchedule as TD.TrainNoiseSchedule["betaSchedule"],
      betaStart: config.beta_start as number | undefined,
      betaEnd: config.beta_end as number | undefined,
    },
  };
}

/** The training images at the model's image size and channels, as VAE latents for latent models. */
function trainingData(td: typeof TD, o: TrainCommand, model: TextToImageComponents, imageSize: number): TD.Dataset {
  const channels: 1 | 3 = model.vae ? 3 : model.unet.config.in_channels === 1 ? 1 : 3;
  if (!model.vae && model.unet.config.in_channels !== channels) {
    throw new CliError(`train: the U-Net takes ${model.unet.config.in_channels} input channels; this command trains image (1 or 3 channel) or VAE-latent models`);
  }
  let images: TD.Dataset;
  if (o.data === "fashion-mnist") {
    if (!fs.existsSync(td.FASHION_MNIST_DIR)) throw new CliError(`--data fashion-mnist: ${td.FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist)`);
    const fashion = new td.FashionMNIST({ split: "train", pad32: imageSize === 32, seed: o.seed });
    images = fashion.size === imageSize && channels === 1 ? fashion : td.mapDataset(fashion, (sample) => ({ ...sample, image: fitImage(td, sample.image, imageSize, channels) }));
  } else {
    const folder = new td.ImageFolderDataset(o.data, { resolution: imageSize, channels, defaultCaption: o.caption });
    images = td.mapDataset(folder, (sample, index) => {
      if (sample.caption === undefined) throw new CliError(`--data: ${folder.files[index]} has no caption (add captions.json, metadata.jsonl or ${path.parse(folder.files[index]).name}.txt, or pass --caption)`);
      return sample;
    });
  }
  return model.vae ? td.latentDataset(images, model.vae, { seed: o.seed }) : images;
}

/** A (C, H, W) image in [-1, 1] resized (bilinear, antialiased) to size × size with `channels` channels. */
function fitImage(td: typeof TD, image: TD.Tensor, size: number, channels: 1 | 3): TD.Tensor {
  return td.tidy(() => {
    let x = image.shape[1] === size && image.shape[2] === size ? image : td.interpolate(image.unsqueeze(0), { size: [size, size], mode: "bilinear", antialias: true }).squeeze(0);
    if (x.shape[0] === 1 && channels === 3) x = x.expand([3, size, size]);
    return x.clamp(-1, 1).contiguous();
  });
}

/** Copies the model directory without the U-Net's weights, which the trained ones replace. */
function copyModelDir(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (entry.name === "checkpoints") continue;
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      if (entry.name === "unet") {
        fs.mkdirSync(target, { recursive: true });
        for (const file of fs.readdirSync(source)) {
          if (file === "model.pt" || file.endsWith(".safetensors") || file.endsWith(".bin")) continue;
          fs.copyFileSync(path.join(source, file), path.join(target, file));
        }
      } else {
        fs.cpSync(source, target, { recursive: true });
      }
    } else {
      fs.copyFileSync(source, target);
    }
  }
  const metaFile = path.join(to, "unet", "torch_diffusion.json");
  if (fs.existsSync(metaFile)) {
    const meta = JSON.parse(fs.readFileSync(metaFile, "utf8")) as Record<string, unknown>;
    delete meta.source_weights; // the trained weights exist only as model.pt
    fs.writeFileSync(metaFile, `${JSON.stringify(meta, null, 2)}\n`);
  }
}

/** `train`. @example await runTrain({ data: "fashion-mnist", steps: "500", out: "my-model" }, io); */
export async function runTrain(values: Values, io: CliIO, signal?: AbortSignal): Promise<number> {
  const o = trainOptions(values, io);
  const td = await import("../index");
  requireDevice(td, o.device);
  const model = td.loadModel(o.dir, { device: o.device });
  try {
    if (!model.unet || !model.textEncoder || !model.tokenizer) throw new CliError(`${o.dir}: train fine-tunes text-conditioned U-Net models (unet, text_encoder, tokenizer)`);
    if (model.unet.config.addition_embed_type) throw new CliError(`${o.dir}: U-Nets with addition_embed_type "${model.unet.config.addition_embed_type}" (SDXL) are not supported by train yet`);
    const components = model as TextToImageComponents;
    const imageSize = defaultImageSize(components);
    const objective = objectiveOf(td, model.schedulerConfig ?? {});
    const dataset = trainingData(td, o, components, imageSize);
    const checkpoints = path.join(o.out, "checkpoints");
    const resumeFrom = fs.existsSync(checkpoints) ? td.listCheckpoints(checkpoints).at(-1) : undefined;
    if (resumeFrom) io.stderr.write(`train: resuming from step ${resumeFrom.step} (${resumeFrom.file})\n`);
    components.textEncoder.eval();
    components.unet.train();
    const bar = new ProgressBar(io.stderr, "train");
    const recent: number[] = [];
    const mean = () => recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
    const started = Date.now();
    const result = await td.train(components.unet.module, dataset, {
      ...objective,
      steps: o.steps,
      batchSize: o.batchSize,
      seed: o.seed,
      lr: o.lr,
      lrSchedule: { kind: "constant", warmupSteps: Math.min(100, Math.floor(o.steps / 10)) },
      condition: td.captionCondition((captions) => encodeTexts(components, captions)),
      conditionDropout: o.captionDropout,
      ema: o.ema === undefined ? false : { decay: o.ema },
      checkpoint: { dir: checkpoints, every: o.checkpointEvery, keep: 2 },
      resume: resumeFrom ? true : undefined,
      signal,
      onStep: ({ step, loss }) => {
        recent.push(loss);
        if (recent.length > 50) recent.shift();
        bar.update(step, o.steps);
        if (!io.stderr.isTTY && (step % o.checkpointEvery === 0 || step === o.steps)) io.stderr.write(`train: step ${step}/${o.steps} loss ${mean().toFixed(4)}\n`);
      },
    });
    bar.done();
    if (result.aborted) {
      io.stderr.write(`train: stopped at step ${result.step}; a checkpoint is in ${checkpoints}: rerun the same command to resume\n`);
      return 130;
    }
    copyModelDir(o.dir, o.out);
    const trained = result.emaModel ?? components.unet.module;
    td.replaceFileAtomic(path.join(o.out, "unet", "model.pt"), (temp) => trained.save(temp));
    result.emaModel?.dispose();
    const record = { from: o.dir, data: o.data, steps: result.step, batchSize: o.batchSize, lr: o.lr, seed: o.seed, captionDropout: o.captionDropout, emaDecay: o.ema ?? null, objective: objective.objective, finalLossAvg50: mean() };
    fs.writeFileSync(path.join(o.out, "training.json"), `${JSON.stringify(record, null, 2)}\n`);
    const seconds = (Date.now() - started) / 1000;
    io.stderr.write(`train: ${result.step} steps in ${seconds.toFixed(1)} s, loss (mean of the last ${recent.length}) ${mean().toFixed(4)}\n`);
    io.stdout.write(`${o.out}\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
