/**
 * fineTune: trains a text-to-image model's U-Net on captioned images and writes the result as
 * a complete model directory — what diffusers' `train_text_to_image.py` does, on the generic
 * trainer. The VAE stays frozen; the text encoder too unless `trainTextEncoder` (diffusers'
 * `--train_text_encoder`): then the prompts are encoded inside each step with autograd and the
 * text encoder trains with the U-Net (./text_to_image.ts), in its checkpoints, EMA and output.
 *
 * The objective and noise schedule come from the model's scheduler config, so the result
 * samples with the same scheduler. Images are fitted to the model (its sample size and image
 * channels) and, for latent models, encoded once per sample by the VAE. Checkpoints go to
 * `<out>/checkpoints`: a rerun with the same options resumes from the newest and ends with
 * the same weights as an uninterrupted run; an abort stops after the current step with a
 * checkpoint and writes no model.
 *
 * With `lora`, only low-rank adapters on the U-Net's attention projections train (see
 * ./lora.ts; with `trainTextEncoder` also on the text encoder's): checkpoints hold just the
 * adapters, and the result is the same complete model directory with the adapters fused in,
 * plus `pytorch_lora_weights.safetensors` (PEFT keys, what diffusers' `load_lora_weights`
 * reads) to apply them to the base model elsewhere.
 *
 * An image-conditioned model (InstructPix2Pix: a U-Net whose input takes the noisy sample and
 * the input image, e.g. from widenInputChannels) trains on edit triplets (samples with a
 * `conditionImage`, e.g. EditTripletDataset) with the paper's condition dropout
 * (`conditioningDropout`; see ./instruct.ts).
 *
 * With `distributed`, every rank of the group runs fineTune with the same options (`batchSize`
 * is the global batch): the Trainer splits the batches (./ddp.ts) and rank 0 alone writes the
 * checkpoints and the model directory while the other ranks wait for it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeDirectoryChecksums } from "../checksums";
import type { ProcessGroup } from "../distributed";
import { assertInteger, assertNumber, invalid } from "../errors";
import { interpolate } from "../functional";
import type { DiffusionModel, TextToImageModel } from "../models";
import { replaceFileAtomic } from "../serialize";
import type { Module } from "../module";
import { tidy, type Tensor } from "../tensor";
import { listCheckpoints, removeStaleTempFiles } from "./checkpoint";
import { captionCondition } from "./conditioning";
import { writeOnMainRank } from "./ddp";
import { mapDataset, type Batch, type Dataset } from "./data";
import { checkInstructDropout, imageCondition, imageConditionChannels, imageConditionedInput, instructDropout, isImageConditioned } from "./instruct";
import { latentDataset } from "./latents";
import { LORA_ATTENTION_TARGETS, LORA_WEIGHTS_FILE, type LoRAOptions } from "./lora";
import { OBJECTIVES, TRAIN_BETA_SCHEDULES, type Objective, type TrainNoiseSchedule } from "./objectives";
import type { StepInfo, TrainBatch, TrainerOptions } from "./options";
import { TrainedParts } from "./text_to_image";
import { Trainer } from "./trainer";

export interface FineTuneOptions {
  /** The model directory to write (with `checkpoints/` inside while training). Must differ from the model's own. */
  out: string;
  /** Optimizer steps. Default 1000. */
  steps?: number;
  /** Default 16. */
  batchSize?: number;
  /** Peak learning rate (constant after a warmup of min(100, steps/10) steps). Default 1e-4. */
  lr?: number;
  /** Seed of noise, timesteps, caption dropout, data order and VAE posterior draws. Default 0. */
  seed?: number;
  /** Fraction of captions replaced by "" so classifier-free guidance keeps working. Default 0.1. */
  captionDropout?: number;
  /** Steps between checkpoints. Default 100. */
  checkpointEvery?: number;
  /** Keep an EMA of the trained weights (the U-Net's, and the text encoder's when it trains) with this decay and write it as the model. Default off. */
  emaDecay?: number;
  /** Resume from the newest checkpoint in `<out>/checkpoints` when there is one. Default true. */
  resume?: boolean;
  signal?: AbortSignal;
  onStep?: (info: StepInfo) => void;
  /** One-line notes (e.g. "resuming from step 60"). */
  log?: (line: string) => void;
  /** Extra fields for `training.json` (e.g. where the data came from). */
  record?: Record<string, unknown>;
  /**
   * Train low-rank adapters instead of the whole U-Net: `{ rank: 4 }` puts rank-4 adapters on
   * the attention projections (see LoRAOptions for alpha, targets, init). Default off.
   */
  lora?: LoRAOptions;
  /**
   * Train the text encoder with the U-Net (diffusers' `--train_text_encoder`), at the same
   * learning rate: all its weights, or with `lora` rank-r adapters on its attention projections
   * (q_proj, k_proj, v_proj, out_proj). The written directory then holds the trained
   * `text_encoder/model.pt`. Default false.
   */
  trainTextEncoder?: boolean;
  /** Train data-parallel over this process group (from initProcessGroup); every rank calls fineTune alike. Default: one process. */
  distributed?: ProcessGroup;
  /**
   * Image-conditioned (InstructPix2Pix) models only, in place of `captionDropout`: the paper's
   * condition dropout p — the instruction alone, the input image alone and both are each
   * dropped for a fraction p of the examples, so both guidance scales work. Default 0.05.
   */
  conditioningDropout?: number;
}

export interface FineTuneResult {
  /** Optimizer steps done in all (resumed ones included). */
  step: number;
  /** The loss of every step (resumed ones included). */
  losses: number[];
  /** True when `signal` stopped the run: a checkpoint was written, the model was not. */
  aborted: boolean;
  /** The step the run resumed from, or null for a fresh run. */
  resumedFrom: number | null;
  /** The written model directory (null when aborted). */
  out: string | null;
  /** Mean loss of the last 50 steps. */
  meanLoss: number;
}

/** What a model's scheduler config says its U-Net was trained for. */
export function trainingObjective(config: Record<string, unknown>): Pick<TrainerOptions, "objective" | "noiseSchedule" | "timestepSampling" | "flowTimestepScale"> {
  const numTrainTimesteps = (config.num_train_timesteps as number | undefined) ?? 1000;
  if (String(config._class_name).startsWith("FlowMatch")) {
    return { objective: "flow_matching", timestepSampling: { kind: "logit_normal" }, flowTimestepScale: numTrainTimesteps };
  }
  const objective = (config.prediction_type as string | undefined) ?? "epsilon";
  if (!(OBJECTIVES as readonly string[]).includes(objective)) throw new Error(`fineTune: the scheduler's prediction_type "${objective}" cannot be trained (${OBJECTIVES.join(", ")})`);
  const betaSchedule = (config.beta_schedule as string | undefined) ?? "linear";
  if (!(TRAIN_BETA_SCHEDULES as readonly string[]).includes(betaSchedule)) {
    throw new Error(`fineTune: the scheduler's beta_schedule "${betaSchedule}" cannot be trained (${TRAIN_BETA_SCHEDULES.join(", ")})`);
  }
  return {
    objective: objective as Objective,
    noiseSchedule: {
      numTrainTimesteps,
      betaSchedule: betaSchedule as TrainNoiseSchedule["betaSchedule"],
      betaStart: config.beta_start as number | undefined,
      betaEnd: config.beta_end as number | undefined,
    },
  };
}

/** A (C, H, W) image in [-1, 1] at size × size with `channels` channels (bilinear, antialiased; gray ↔ RGB). */
export function fitImage(image: Tensor, size: number, channels: number): Tensor {
  return tidy(() => {
    if (image.ndim !== 3) throw new Error(`fineTune: expected (C, H, W) images but received shape [${image.shape.join(", ")}]`);
    let x = image.shape[1] === size && image.shape[2] === size ? image : interpolate(image.unsqueeze(0), { size: [size, size], mode: "bilinear", antialias: true }).squeeze(0);
    if (x.shape[0] === 1 && channels === 3) x = x.expand([3, size, size]);
    else if (x.shape[0] === 3 && channels === 1) x = x.mean(0, true);
    else if (x.shape[0] !== channels) throw new Error(`fineTune: the model works on ${channels}-channel images but a sample has ${x.shape[0]} channels`);
    return x.clamp(-1, 1).contiguous();
  });
}

/**
 * The training data as the U-Net sees it: images fitted to the model, captions required, and
 * VAE latents for latent models. An image-conditioned (InstructPix2Pix) model also needs each
 * sample's `conditionImage` (the edit's input), fitted alike and, for latent models, encoded as
 * its image conditioning (the VAE posterior's mode, unscaled; see imageCondition).
 * @example const data = fineTuneDataset(model, new FashionMNIST(), 0);
 */
export function fineTuneDataset(model: TextToImageModel, dataset: Dataset, seed = 0): Dataset {
  const size = model.sampleSize;
  const channels = model.imageChannels;
  const imageConditioned = isImageConditioned(model);
  const fit = (image: Tensor) => {
    const [c, h, w] = image.shape;
    return c === channels && h === size && w === size ? image : fitImage(image, size, channels);
  };
  const fitted = mapDataset(dataset, (sample, index) => {
    if (typeof sample.caption !== "string") throw new Error(`fineTune: sample ${index} has no caption (a text-to-image model trains on captioned images)`);
    if (!imageConditioned) return { ...sample, image: fit(sample.image) };
    if (!sample.conditionImage) throw new Error(`fineTune: sample ${index} has no conditionImage (an image-conditioned model trains on (input image, instruction, edited image) triplets, e.g. EditTripletDataset)`);
    return { ...sample, image: fit(sample.image), conditionImage: fit(sample.conditionImage) };
  });
  if (!model.vae) return fitted;
  const latents = latentDataset(fitted, model, { seed });
  if (!imageConditioned) return latents;
  return mapDataset(latents, async (sample) => {
    const condition = await imageCondition(model, sample.conditionImage!.unsqueeze(0)); // (1, c, h, w)
    return { ...sample, conditionImage: condition.squeeze(0) };
  });
}

function checkOptions(model: DiffusionModel, o: FineTuneOptions): Required<Omit<FineTuneOptions, "emaDecay" | "signal" | "onStep" | "log" | "record" | "lora" | "distributed" | "trainTextEncoder" | "conditioningDropout">> & FineTuneOptions {
  if (o === null || typeof o !== "object") throw invalid("options object", "fineTune options", o);
  if (typeof o.out !== "string" || o.out === "") throw invalid("output directory path", "fineTune options.out", o.out);
  const resolved = {
    ...o,
    out: path.resolve(o.out),
    steps: o.steps ?? 1000,
    batchSize: o.batchSize ?? 16,
    lr: o.lr ?? 1e-4,
    seed: o.seed ?? 0,
    captionDropout: o.captionDropout ?? 0.1,
    checkpointEvery: o.checkpointEvery ?? 100,
    resume: o.resume ?? true,
  };
  assertInteger(resolved.steps, "fineTune options.steps", 1);
  assertInteger(resolved.batchSize, "fineTune options.batchSize", 1);
  assertInteger(resolved.seed, "fineTune options.seed", 0);
  assertInteger(resolved.checkpointEvery, "fineTune options.checkpointEvery", 1);
  assertNumber(resolved.lr, "fineTune options.lr");
  if (!(resolved.lr >= 0)) throw invalid("non-negative number", "fineTune options.lr", resolved.lr);
  assertNumber(resolved.captionDropout, "fineTune options.captionDropout");
  if (resolved.captionDropout < 0 || resolved.captionDropout > 1) throw invalid("number in [0, 1]", "fineTune options.captionDropout", resolved.captionDropout);
  if (o.emaDecay !== undefined && !(typeof o.emaDecay === "number" && o.emaDecay >= 0 && o.emaDecay < 1)) throw invalid("number in [0, 1)", "fineTune options.emaDecay", o.emaDecay);
  if (o.lora !== undefined && (o.lora === null || typeof o.lora !== "object")) throw invalid("LoRA options object", "fineTune options.lora", o.lora);
  if (o.trainTextEncoder !== undefined && typeof o.trainTextEncoder !== "boolean") throw invalid("boolean", "fineTune options.trainTextEncoder", o.trainTextEncoder);
  if (o.conditioningDropout !== undefined) checkInstructDropout(o.conditioningDropout, "fineTune options.conditioningDropout");
  if (model.dir === null) throw new Error("fineTune: the model has no directory to copy its other components from (load it with loadModel)");
  if (path.resolve(model.dir) === resolved.out) throw new Error("fineTune: options.out must differ from the model's directory: the trained model is written as a new directory");
  if (fs.existsSync(resolved.out) && !fs.statSync(resolved.out).isDirectory()) throw new Error(`fineTune: options.out ${resolved.out} exists and is not a directory`);
  return resolved;
}

/**
 * Fine-tunes `model`'s U-Net on `dataset` (captioned images in [-1, 1], any size) in place and
 * writes `options.out` as a complete model directory: the model's other components copied,
 * the trained (or EMA) U-Net, `training.json` recording the run and `checksums.sha256` of
 * every file (checked by `loadModel`). The directory holds one record: the base model's own
 * (its `training.json`, or the built-in model's `recipe.json`) is kept inside the new one as
 * `base`, not copied beside it.
 * @example
 * const model = loadModel("models/builtin");
 * const result = await fineTune(model, new ImageFolderDataset("photos", { defaultCaption: "a photo of sks bag" }), { out: "my-model", steps: 500 });
 */
export async function fineTune(model: DiffusionModel, dataset: Dataset, options: FineTuneOptions): Promise<FineTuneResult> {
  const o = checkOptions(model, options);
  const t2i = model.requireTextToImage("fineTune");
  if (t2i.unet.config.addition_embed_type) throw new Error(`fineTune: U-Nets with addition_embed_type "${t2i.unet.config.addition_embed_type}" (SDXL) are not supported yet`);
  // Training keeps each level's activations for backward, and gradients: about 3× a forward pass.
  t2i.checkMemory(Math.max(1, Math.floor(o.batchSize / (o.distributed?.worldSize ?? 1))), {}, "fineTune", 3);
  const objective = trainingObjective(model.schedulerConfig ?? {});
  // InstructPix2Pix: the U-Net also takes the input image; text and image are dropped by ranges of one draw.
  const imageConditioned = isImageConditioned(t2i);
  if (imageConditioned && options.captionDropout !== undefined) throw new Error("fineTune: options.captionDropout is for text-to-image models; an image-conditioned (InstructPix2Pix) model drops text and image by options.conditioningDropout");
  if (!imageConditioned && o.conditioningDropout !== undefined) throw new Error(`fineTune: options.conditioningDropout is for image-conditioned (InstructPix2Pix) models, and this U-Net takes ${t2i.unet.config.in_channels} input channels, not ${t2i.latentChannels} + ${imageConditionChannels(t2i)} (see widenInputChannels)`);
  const conditioningDropout = o.conditioningDropout ?? 0.05;
  const data = fineTuneDataset(t2i, dataset, o.seed);
  prepareOutput(o.out);
  const checkpoints = path.join(o.out, "checkpoints");
  const resumeFrom = o.resume && fs.existsSync(checkpoints) ? listCheckpoints(checkpoints).at(-1) : undefined;
  const recordFile = path.join(o.out, "training.json");
  if (resumeFrom && resumeFrom.step >= o.steps) {
    const written = fs.existsSync(recordFile) && fs.existsSync(path.join(o.out, "unet", "model.pt"));
    o.log?.(`${checkpoints} is at step ${resumeFrom.step}, and ${o.steps} steps were asked: nothing to train; ${written ? "the model and its training.json are kept as they are" : "writing the model of that step"} (more steps continue the run; a new --out starts a new one)`);
    if (written) {
      const record = JSON.parse(fs.readFileSync(recordFile, "utf8")) as { steps?: number; finalLossAvg50?: number };
      return { step: record.steps ?? resumeFrom.step, losses: [], aborted: false, resumedFrom: resumeFrom.step, out: o.out, meanLoss: record.finalLossAvg50 ?? NaN };
    }
  } else if (resumeFrom) {
    o.log?.(`resuming from step ${resumeFrom.step} (${resumeFrom.file})`);
  }
  // The U-Net's weights, or adapters on it (B = 0, so training starts from the model itself), and the text encoder's when it trains.
  const parts = TrainedParts.create(t2i, { lora: o.lora, trainTextEncoder: o.trainTextEncoder, seed: o.seed });
  parts.train();
  const trainer = (() => {
    try {
      return new Trainer(t2i.unet.module, data, {
        ...objective,
        steps: o.steps,
        batchSize: o.batchSize,
        seed: o.seed,
        lr: o.lr,
        lrSchedule: { kind: "constant", warmupSteps: Math.min(100, Math.floor(o.steps / 10)) },
        ...(imageConditioned ? {
          condition: (batch: Batch, _drop: boolean[], draws: number[]) => {
            if (!batch.captions) throw new Error("fineTune: the batch has no captions (instructions)");
            return parts.encode(batch.captions.map((c, i) => (instructDropout(draws[i], conditioningDropout).text ? "" : c)));
          },
          conditionDropout: 3 * conditioningDropout,
          forward: (module: Module, sample: Tensor, timestep: Tensor, batch: TrainBatch) => parts.forward(module, imageConditionedInput(sample, batch, conditioningDropout), timestep, batch),
        } : {
          condition: captionCondition((captions) => parts.encode(captions)),
          conditionDropout: o.captionDropout,
          forward: parts.forward,
        }),
        parameters: parts.parameters,
        ema: o.emaDecay === undefined ? false : { decay: o.emaDecay },
        checkpoint: { dir: checkpoints, every: o.checkpointEvery, keep: 2 },
        resume: resumeFrom ? true : undefined,
        signal: o.signal,
        onStep: o.onStep,
        distributed: o.distributed,
      });
    } catch (error) {
      parts.unfuse();
      parts.dispose();
      parts.eval();
      throw error;
    }
  })();
  let result: Awaited<ReturnType<Trainer["run"]>>;
  try {
    result = await trainer.run();
    if (trainer.ema) parts.useAverages(trainer.ema);
    parts.fuse(); // the networks keep the trained adapters, without a graph, as full fine-tuning keeps its weights
  } catch (error) {
    parts.fuse(); // the model keeps what was trained, as full fine-tuning keeps its weights
    parts.dispose();
    throw error;
  } finally {
    trainer.dispose();
    parts.eval();
  }
  const recent = result.losses.slice(-50);
  const meanLoss = recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  const summary = { step: result.step, losses: result.losses, aborted: result.aborted, resumedFrom: resumeFrom?.step ?? null, meanLoss };
  if (result.aborted) {
    parts.dispose();
    return { ...summary, out: null };
  }
  await writeOnMainRank(o.distributed, () => {
    copyModelDir(model.dir!, o.out, parts.components);
    writeUNetConfig(t2i, o.out);
    parts.write(o.out);
    const record = {
      from: model.dir, ...o.record, steps: result.step, batchSize: o.batchSize, lr: o.lr, seed: o.seed,
      ...(imageConditioned ? { conditioningDropout, inChannels: t2i.unet.config.in_channels } : { captionDropout: o.captionDropout }),
      emaDecay: o.emaDecay ?? null, trainTextEncoder: parts.trainTextEncoder, objective: objective.objective, finalLossAvg50: meanLoss, base: baseRecord(model.dir!),
      ...(o.lora ? {
        lora: {
          rank: o.lora.rank ?? 4, alpha: o.lora.alpha ?? o.lora.rank ?? 4, targets: o.lora.targets instanceof RegExp ? String(o.lora.targets) : (o.lora.targets ?? LORA_ATTENTION_TARGETS), init: o.lora.init ?? "gaussian", file: LORA_WEIGHTS_FILE,
          ...(parts.textEncoderLoRA ? { textEncoderTargets: parts.textEncoderLoRA.targets } : {}),
        },
      } : {}),
      ...(o.distributed ? { distributed: { worldSize: o.distributed.worldSize, backend: o.distributed.backend } } : {}),
    };
    replaceFileAtomic(recordFile, (temp) => fs.writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`));
    writeDirectoryChecksums(o.out);
  }).finally(() => parts.dispose());
  return { ...summary, out: o.out };
}

/** The U-Net's config as the model holds it, when that differs from the copied file (a widened conv_in has more input channels). */
function writeUNetConfig(model: TextToImageModel, out: string): void {
  const file = path.join(out, "unet", "config.json");
  const config = model.unet.config as Record<string, unknown>;
  if (fs.existsSync(file) && JSON.stringify(JSON.parse(fs.readFileSync(file, "utf8"))) === JSON.stringify(config)) return;
  fs.writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * Checks `out` can be written before any training (a read-only mount should fail now, not
 * after the run) and removes temp files a killed earlier run left in it.
 */
export function prepareOutput(out: string, who = "fineTune"): void {
  try {
    fs.mkdirSync(out, { recursive: true });
    const probe = path.join(out, `.write-probe.${process.pid}`);
    fs.writeFileSync(probe, "");
    fs.rmSync(probe);
  } catch (error) {
    throw new Error(`${who}: cannot write the output directory ${out}: ${(error as Error).message}`);
  }
  for (const dir of [out, ...fs.readdirSync(out, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(out, e.name))]) removeStaleTempFiles(dir);
}

/**
 * The files in which a model directory records how its weights were made: ours (`training.json`),
 * a built-in model's recipe (`recipe.json`) and the name earlier versions gave that one, which
 * collides with `training.json` on case-insensitive file systems.
 */
const RECORD_FILES = ["training.json", "recipe.json", "TRAINING.json"];

/** The base model's record (the first of RECORD_FILES it has), or null when it has none or it is not JSON. */
export function baseRecord(dir: string): Record<string, unknown> | null {
  for (const name of RECORD_FILES) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) continue;
    try {
      return JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
    } catch {
      return null;
    }
  }
  return null;
}

/** What a LoRA or DreamBooth run leaves beside its model: not copied when that directory is the next run's base (its LoRA is already fused into its U-Net). */
const RUN_ARTIFACTS = [LORA_WEIGHTS_FILE, "class_images", "validation"];

/**
 * Copies a model directory without the weights of the `trained` components (the trained ones
 * replace them), checkpoints and its record (folded into the new one).
 */
export function copyModelDir(from: string, to: string, trained: readonly string[] = ["unet"]): void {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (entry.name === "checkpoints" || RECORD_FILES.includes(entry.name) || RUN_ARTIFACTS.includes(entry.name)) continue;
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory() && trained.includes(entry.name)) {
      fs.mkdirSync(target, { recursive: true });
      for (const file of fs.readdirSync(source)) {
        if (file === "model.pt" || file.endsWith(".safetensors") || file.endsWith(".bin")) continue;
        fs.copyFileSync(path.join(source, file), path.join(target, file));
      }
    } else if (entry.isDirectory()) {
      fs.cpSync(source, target, { recursive: true });
    } else {
      fs.copyFileSync(source, target);
    }
  }
  for (const component of trained) {
    const metaFile = path.join(to, component, "torch_diffusion.json");
    if (!fs.existsSync(metaFile)) continue;
    const meta = JSON.parse(fs.readFileSync(metaFile, "utf8")) as Record<string, unknown>;
    delete meta.source_weights; // the trained weights exist only as model.pt
    fs.writeFileSync(metaFile, `${JSON.stringify(meta, null, 2)}\n`);
  }
}
