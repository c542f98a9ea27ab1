/**
 * DreamBooth (Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for
 * Subject-Driven Generation", CVPR 2023): teach a text-to-image model one subject from a few
 * images, bound to a unique identifier [V], so "a [V] [class noun] on the beach" renders it.
 *
 * 1. Pick [V]: rare tokens of the model's tokenizer (§4.2), or the caller's ("sks").
 * 2. Sample N class images "a [class noun]" with the frozen model (§4.3; N = 200 as the
 *    paper), cached with their seeds in `<out>/class_images` so a rerun reuses them.
 * 3. Fine-tune the U-Net (or low-rank adapters on it) on batches of instance examples
 *    "a [V] [class noun]" followed by as many class examples, with
 *    L = L_instance + λ·L_prior (λ = 1), on the generic Trainer: checkpoints in
 *    `<out>/checkpoints`, exact resume, abort after the current step. With `trainTextEncoder`
 *    the text encoder trains too (the paper fine-tunes all of Imagen; diffusers'
 *    `--train_text_encoder`): its weights, or with `lora` adapters on it (../training/text_to_image.ts).
 * 4. Render validation prompts every K steps into `<out>/validation`, and write `<out>` as a
 *    complete model directory (with LoRA: the adapters fused in, and
 *    `pytorch_lora_weights.safetensors` beside it for diffusers' `load_lora_weights`).
 *
 * Data-parallel (`distributed`): every rank runs dreambooth with the same options. The ranks
 * share out the missing class images (each image depends on its seed alone) and wait for one
 * another before training; each step's instance and class examples are split over them with
 * the prior loss normalized by the global batch (priorPreservationLoss), so the run equals
 * one process's up to float rounding. Rank 0 alone renders validation images and writes files
 * while the others wait (the group's timeout must exceed a validation's time).
 *
 * The training pieces live in lib/training/dreambooth.ts; this file adds the sampling they need.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { writeDirectoryChecksums } from "../checksums";
import { assertInteger, assertNumber, invalid } from "../errors";
import { imageGrid, writeImage } from "../image";
import type { DiffusionModel, TextToImageModel } from "../models";
import { replaceFileAtomic, writeFileAtomic } from "../serialize";
import { cat, Generator, keep, randn, tidy, type Tensor } from "../tensor";
import { isProcessGroup, type ProcessGroup } from "../distributed";
import { listCheckpoints } from "../training/checkpoint";
import { tensorDataset, type Dataset } from "../training/data";
import { onEveryRank, writeOnMainRank } from "../training/ddp";
import {
  classImageFile, dreamBoothDataset, ensureClassImages, imageFilesDataset, priorPreservationLoss, rareTokenIdentifier,
} from "../training/dreambooth";
import { baseRecord, copyModelDir, prepareOutput, trainingObjective } from "../training/fine_tune";
import { ImageFolderDataset } from "../training/image_folder";
import { latentDataset } from "../training/latents";
import { LORA_WEIGHTS_FILE, type LoRAOptions } from "../training/lora";
import type { StepInfo } from "../training/options";
import { TrainedParts } from "../training/text_to_image";
import { Trainer } from "../training/trainer";
import { Text2ImagePipeline } from "./text2img";

export interface DreamBoothOptions {
  model: DiffusionModel;
  /** The subject: a folder of images, a (N, C, H, W) tensor in [0, 1], or a Dataset of `{ image }` in [-1, 1]. Any size: examples are resized and cropped to the model's. */
  instanceImages: string | Tensor | Dataset;
  /** What the subject is, e.g. "sneaker", "dog". */
  classNoun: string;
  /** The model directory to write (class images, validation images and checkpoints go inside while training). */
  out: string;
  /** [V]. Default: rare tokens of the model's tokenizer drawn by `seed` (see rareTokenIdentifier). */
  identifier?: string;
  /** Default `a ${identifier} ${classNoun}`. */
  instancePrompt?: string;
  /** Default `a ${classNoun}`. */
  classPrompt?: string;
  /** Train with class images and the prior-preservation loss. Default true. */
  priorPreservation?: boolean;
  /** λ. Default 1. */
  priorLossWeight?: number;
  /** Class images to sample (or reuse). Default 200. */
  numClassImages?: number;
  /** Where the class images are cached. Default `<out>/class_images`. */
  classDir?: string;
  /** How class and validation images are sampled. Defaults: the model's steps and guidance; 8 images per call. */
  sampling?: { steps?: number; guidanceScale?: number; batchSize?: number };
  /** Optimizer steps. Default 400 (diffusers' DreamBooth example). */
  steps?: number;
  /** Instance examples per step (as many class examples join them). Default 1. */
  batchSize?: number;
  /** Constant learning rate. Default 5e-6 (diffusers' example), 1e-4 with `lora`. */
  lr?: number;
  /** Train low-rank adapters instead of the whole U-Net (and text encoder, with `trainTextEncoder`; see LoRAOptions). Default off. */
  lora?: LoRAOptions;
  /**
   * Train the text encoder too (diffusers' `--train_text_encoder`), at the same learning rate:
   * its weights, or with `lora` adapters on its attention projections. Default false.
   */
  trainTextEncoder?: boolean;
  /** Train data-parallel over this process group (from initProcessGroup); every rank calls dreambooth alike. Default: one process. */
  distributed?: ProcessGroup;
  /** Seed of the identifier, class images, example order, augmentation, noise and timesteps. Default 0. */
  seed?: number;
  /** Center crop instead of a random crop after resizing (diffusers' `--center_crop`). Default false. */
  centerCrop?: boolean;
  /** Mirror examples left-right at random. Default false. */
  randomFlip?: boolean;
  /** Prompts rendered every `validationEvery` steps (and at the end) into `<out>/validation/step-N.png`. */
  validationPrompts?: string[];
  /** Default 100. */
  validationEvery?: number;
  /** Images per validation prompt, seeds `seed`, `seed + 1`, .... Default 4. */
  validationImages?: number;
  /** Steps between checkpoints. Default 100. */
  checkpointEvery?: number;
  /** Resume from the newest checkpoint in `<out>/checkpoints` when there is one. Default true. */
  resume?: boolean;
  signal?: AbortSignal;
  onStep?: (info: StepInfo) => void;
  /** Class image sampling progress. */
  onClassImages?: (done: number, total: number) => void;
  /** One-line notes ("resuming from step 200", "sampling 200 class images"). */
  log?: (line: string) => void;
  /** Extra fields for `training.json`. */
  record?: Record<string, unknown>;
}

export interface DreamBoothResult {
  /** Optimizer steps done in all (resumed ones included). */
  step: number;
  losses: number[];
  /** True when `signal` stopped training: a checkpoint was written, the model was not. */
  aborted: boolean;
  resumedFrom: number | null;
  /** The written model directory (null when aborted). */
  out: string | null;
  identifier: string;
  instancePrompt: string;
  classPrompt: string;
  /** The class image files used (empty without prior preservation). */
  classImages: string[];
  /** The validation grids written. */
  validation: string[];
  /** Mean loss of the last 50 steps. */
  meanLoss: number;
}

interface Resolved {
  out: string;
  identifier: string;
  instancePrompt: string;
  classPrompt: string;
  priorPreservation: boolean;
  priorLossWeight: number;
  numClassImages: number;
  classDir: string;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  validationEvery: number;
  validationImages: number;
  checkpointEvery: number;
  sampleBatch: number;
}

function resolve(o: DreamBoothOptions, model: TextToImageModel): Resolved {
  if (o === null || typeof o !== "object") throw invalid("options object", "dreambooth options", o);
  if (typeof o.classNoun !== "string" || o.classNoun.trim() === "") throw invalid("non-empty string", "dreambooth classNoun", o.classNoun);
  if (typeof o.out !== "string" || o.out === "") throw invalid("output directory path", "dreambooth out", o.out);
  const seed = o.seed ?? 0;
  assertInteger(seed, "dreambooth seed", 0);
  if (o.identifier !== undefined && (typeof o.identifier !== "string" || !/^\S+( \S+)*$/.test(o.identifier))) throw invalid("non-empty string without leading/trailing spaces", "dreambooth identifier", o.identifier);
  const identifier = o.identifier ?? rareTokenIdentifier(model.tokenizer, { seed }).identifier;
  const out = path.resolve(o.out);
  const r: Resolved = {
    out,
    identifier,
    instancePrompt: o.instancePrompt ?? `a ${identifier} ${o.classNoun}`,
    classPrompt: o.classPrompt ?? `a ${o.classNoun}`,
    priorPreservation: o.priorPreservation ?? true,
    priorLossWeight: o.priorLossWeight ?? 1,
    numClassImages: o.numClassImages ?? 200,
    classDir: path.resolve(o.classDir ?? path.join(out, "class_images")),
    steps: o.steps ?? 400,
    batchSize: o.batchSize ?? 1,
    lr: o.lr ?? (o.lora ? 1e-4 : 5e-6),
    seed,
    validationEvery: o.validationEvery ?? 100,
    validationImages: o.validationImages ?? 4,
    checkpointEvery: o.checkpointEvery ?? 100,
    sampleBatch: o.sampling?.batchSize ?? 8,
  };
  for (const [name, min] of [["steps", 1], ["batchSize", 1], ["numClassImages", 1], ["validationEvery", 1], ["validationImages", 1], ["checkpointEvery", 1], ["sampleBatch", 1]] as const) {
    assertInteger(r[name], `dreambooth ${name}`, min);
  }
  for (const name of ["priorLossWeight", "lr"] as const) {
    assertNumber(r[name], `dreambooth ${name}`);
    if (!(r[name] >= 0)) throw invalid("non-negative number", `dreambooth ${name}`, r[name]);
  }
  for (const name of ["instancePrompt", "classPrompt"] as const) if (typeof r[name] !== "string") throw invalid("string", `dreambooth ${name}`, r[name]);
  if (o.validationPrompts !== undefined && !(Array.isArray(o.validationPrompts) && o.validationPrompts.every((p) => typeof p === "string"))) throw invalid("string[]", "dreambooth validationPrompts", o.validationPrompts);
  if (o.lora !== undefined && (o.lora === null || typeof o.lora !== "object")) throw invalid("LoRA options object", "dreambooth lora", o.lora);
  if (o.trainTextEncoder !== undefined && typeof o.trainTextEncoder !== "boolean") throw invalid("boolean", "dreambooth trainTextEncoder", o.trainTextEncoder);
  if (o.distributed !== undefined && (!isProcessGroup(o.distributed) || o.distributed.isDestroyed)) throw invalid("live ProcessGroup from initProcessGroup()", "dreambooth distributed", o.distributed);
  const worldSize = o.distributed?.worldSize ?? 1;
  const perStep = r.batchSize * (r.priorPreservation ? 2 : 1);
  if (perStep % worldSize !== 0) {
    throw new Error(`dreambooth: a step's ${perStep} examples (batchSize ${r.batchSize}${r.priorPreservation ? " subject + as many class images" : ""}) must split evenly over the group's ${worldSize} ranks`);
  }
  if (model.dir === null) throw new Error("dreambooth: the model has no directory to copy its other components from (load it with loadModel)");
  if (path.resolve(model.dir) === out) throw new Error("dreambooth: out must differ from the model's directory: the trained model is written as a new directory");
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new Error(`dreambooth: out ${out} exists and is not a directory`);
  return r;
}

/** The subject's images as a Dataset of `{ image }` in [-1, 1], and what to free after training. */
function instanceDataset(source: DreamBoothOptions["instanceImages"], channels: number): { dataset: Dataset; held?: Tensor } {
  if (typeof source === "string") return { dataset: new ImageFolderDataset(source, { channels: channels === 1 ? 1 : 3 }) };
  if (source && typeof (source as Dataset).get === "function") return { dataset: source as Dataset };
  const images = source as Tensor;
  if (images?.ndim !== 4) throw invalid("image folder, (N, C, H, W) Tensor in [0, 1] or Dataset", "dreambooth instanceImages", source);
  const held = keep(tidy(() => images.float().mul(2).sub(1))); // (N, C, H, W) in [-1, 1]
  return { dataset: tensorDataset(held), held };
}

/**
 * Images of `prompt` from the model as it is now, image k drawn from a Generator seeded
 * `seeds[k]` — each the image `generate` gives for that seed (the same initial noise) — in one batch.
 * @example const images = await sampleSeeds(model, "a sneaker", [0, 1, 2], { steps: 30 });
 */
export async function sampleSeeds(model: TextToImageModel, prompt: string, seeds: number[], o: { steps?: number; guidanceScale?: number } = {}): Promise<Tensor> {
  const scheduler = model.newScheduler();
  try {
    scheduler.setTimesteps(o.steps ?? model.defaults.numInferenceSteps ?? 50);
    const sigma = scheduler.initNoiseSigma;
    const latents = tidy(() => cat(seeds.map((s) => randn(model.latentShape(1), { generator: new Generator(s) }))).mul(sigma).to({ device: model.device })); // (n, C, h, w)
    try {
      const { images } = await new Text2ImagePipeline(model).generate({
        prompt, numImagesPerPrompt: seeds.length, latents, scheduler, guidanceScale: o.guidanceScale, numInferenceSteps: o.steps, generator: new Generator(seeds[0] ?? 0),
      });
      return images;
    } finally {
      latents.dispose();
    }
  } finally {
    scheduler.dispose();
  }
}

/**
 * Runs DreamBooth on `options.model` (its U-Net, and with `trainTextEncoder` its text encoder,
 * are trained in place; with `lora` the adapters end fused into them) and writes `options.out`.
 * A rerun with the same options resumes: class images and checkpoints are reused; an abort
 * stops after the current step with a checkpoint.
 * @example
 * const model = loadModel("models/builtin");
 * const result = await dreambooth({ model, instanceImages: "subject/", classNoun: "sneaker", out: "my-sneaker", lora: { rank: 4 } });
 * console.log(result.instancePrompt); // "a nyj sneaker": use it in prompts, e.g. "a photo of a nyj sneaker"
 */
export async function dreambooth(options: DreamBoothOptions): Promise<DreamBoothResult> {
  const model = (options?.model as DiffusionModel)?.requireTextToImage?.("dreambooth");
  if (!model) throw invalid("DiffusionModel (from loadModel)", "dreambooth model", options?.model);
  if (model.unet.config.addition_embed_type) throw new Error(`dreambooth: U-Nets with addition_embed_type "${model.unet.config.addition_embed_type}" (SDXL) are not supported yet`);
  const r = resolve(options, model);
  const group = options.distributed;
  const halves = r.priorPreservation ? 2 : 1;
  model.checkMemory((r.batchSize * halves) / (group?.worldSize ?? 1), {}, "dreambooth", 3);
  const objective = trainingObjective(model.schedulerConfig ?? {});
  const log = options.log ?? (() => {});
  prepareOutput(r.out, "dreambooth");
  const sampling = { steps: options.sampling?.steps, guidanceScale: options.sampling?.guidanceScale };
  const channels = model.imageChannels;
  const trainTextEncoder = options.trainTextEncoder === true;

  // 2. Class images from the frozen model (before any training step changes it); in a group each rank makes its share.
  let classImages: string[] = [];
  if (r.priorPreservation) {
    const missing = Array.from({ length: r.numClassImages }, (_, i) => i).filter((i) => !fs.existsSync(classImageFile(r.classDir, i, r.seed + i))).length;
    if (missing > 0) log(`sampling ${missing} class images of "${r.classPrompt}" into ${r.classDir}${group ? ` (${group.worldSize} ranks share them)` : ""}`);
    classImages = await onEveryRank(group, () => ensureClassImages(r.classDir, {
      prompt: r.classPrompt, count: r.numClassImages, seed: r.seed, batchSize: r.sampleBatch, signal: options.signal, onProgress: options.onClassImages,
      settings: { model: model.dir, scheduler: model.scheduler.className, steps: sampling.steps ?? model.defaults.numInferenceSteps ?? 50, guidanceScale: sampling.guidanceScale ?? model.defaults.guidanceScale ?? 7.5 },
      sample: (prompt, seeds) => sampleSeeds(model, prompt, seeds, sampling),
      shard: group && { rank: group.rank, worldSize: group.worldSize },
    }));
  }

  // 3. The run's examples, in the order the Trainer walks them.
  const checkpoints = path.join(r.out, "checkpoints");
  const resumeFrom = options.resume !== false ? listCheckpoints(checkpoints).at(-1) : undefined;
  const recordFile = path.join(r.out, "training.json");
  if (resumeFrom && resumeFrom.step >= r.steps && fs.existsSync(recordFile) && fs.existsSync(path.join(r.out, "unet", "model.pt"))) {
    log(`${checkpoints} is at step ${resumeFrom.step}, and ${r.steps} steps were asked: nothing to train; the model is kept as it is`);
    const saved = JSON.parse(fs.readFileSync(recordFile, "utf8")) as { steps?: number; finalLossAvg50?: number };
    return { step: saved.steps ?? resumeFrom.step, losses: [], aborted: false, resumedFrom: resumeFrom.step, out: r.out, identifier: r.identifier, instancePrompt: r.instancePrompt, classPrompt: r.classPrompt, classImages, validation: [], meanLoss: saved.finalLossAvg50 ?? NaN };
  }
  // What determines the run's examples and updates (more steps continue it): a resume must share them.
  const settings = {
    identifier: r.identifier, instancePrompt: r.instancePrompt, classPrompt: r.classPrompt, priorPreservation: r.priorPreservation, priorLossWeight: r.priorLossWeight,
    numClassImages: r.priorPreservation ? r.numClassImages : 0, batchSize: r.batchSize, lr: r.lr, seed: r.seed, centerCrop: options.centerCrop ?? false,
    randomFlip: options.randomFlip ?? false, lora: options.lora ? { ...options.lora, targets: options.lora.targets instanceof RegExp ? String(options.lora.targets) : options.lora.targets } : null,
    ...(trainTextEncoder ? { trainTextEncoder } : {}), // only when on: earlier runs' settings stay equal
  };
  const settingsFile = path.join(checkpoints, "dreambooth.json");
  const settingsText = `${JSON.stringify(settings, null, 2)}\n`;
  if (resumeFrom && fs.existsSync(settingsFile) && fs.readFileSync(settingsFile, "utf8") !== settingsText) {
    throw new Error(`dreambooth: the checkpoints in ${checkpoints} are of a run with other settings (${settingsFile}): use another out folder, or delete its checkpoints to start over`);
  }
  await writeOnMainRank(group, () => {
    fs.mkdirSync(checkpoints, { recursive: true });
    writeFileAtomic(settingsFile, settingsText);
  });
  if (resumeFrom) log(`resuming from step ${resumeFrom.step} (${resumeFrom.file})`);
  const size = model.sampleSize;
  const instances = instanceDataset(options.instanceImages, channels);
  const examples = dreamBoothDataset(instances.dataset, r.priorPreservation ? imageFilesDataset(classImages, size, channels === 1 ? 1 : 3) : null, {
    instancePrompt: r.instancePrompt, classPrompt: r.classPrompt, batchSize: r.batchSize, batches: r.steps, size, channels,
    centerCrop: options.centerCrop, randomFlip: options.randomFlip, seed: r.seed,
  });
  const data = model.vae ? latentDataset(examples, model, { seed: r.seed }) : examples;

  // A frozen text encoder's embeddings of the two prompts, computed once (diffusers' --pre_compute_text_embeddings);
  // a trained one encodes every batch inside the step.
  const embeddings = new Map<string, Tensor>();
  if (!trainTextEncoder) for (const p of new Set([r.instancePrompt, r.classPrompt])) embeddings.set(p, keep(await model.encodePrompt([p]))); // (1, T, D)
  const parts = (() => {
    try {
      return TrainedParts.create(model, { lora: options.lora, trainTextEncoder, seed: r.seed });
    } catch (error) {
      for (const t of embeddings.values()) t.dispose();
      instances.held?.dispose();
      throw error;
    }
  })();
  const condition = trainTextEncoder
    ? (batch: { captions?: string[] }) => parts.encode(batch.captions!)
    : (batch: { captions?: string[] }) => cat(batch.captions!.map((c) => embeddings.get(c)!)); // (B, T, D)
  parts.train();
  const validation: string[] = [];
  const validate = async (step: number): Promise<void> => {
    if (!options.validationPrompts?.length) return;
    parts.fuse();
    parts.eval();
    try {
      const seeds = Array.from({ length: r.validationImages }, (_, i) => r.seed + i);
      const rows: Tensor[] = [];
      try {
        for (const prompt of options.validationPrompts) rows.push(await sampleSeeds(model, prompt, seeds, sampling));
        const grid = tidy(() => imageGrid(cat(rows), r.validationImages));
        const file = path.join(r.out, "validation", `step-${String(step).padStart(8, "0")}.png`);
        fs.mkdirSync(path.dirname(file), { recursive: true });
        await writeImage(grid, file).finally(() => grid.dispose());
        validation.push(file);
      } finally {
        rows.forEach((t) => t.dispose());
      }
    } finally {
      parts.train();
    }
  };

  let trainer: Trainer;
  try {
    trainer = new Trainer(model.unet.module, data, {
      ...objective,
      steps: r.steps,
      batchSize: r.batchSize * halves,
      shuffle: false,
      seed: r.seed,
      lr: r.lr,
      lrSchedule: { kind: "constant", warmupSteps: 0 },
      condition,
      // Normalized by the global batch's counts, so a group's ranks (each with part of a step's examples) average to the one-process loss.
      loss: r.priorPreservation ? priorPreservationLoss(r.priorLossWeight, { perHalf: r.batchSize, worldSize: group?.worldSize ?? 1 }) : undefined,
      parameters: parts.parameters,
      forward: parts.forward,
      checkpoint: { dir: checkpoints, every: r.checkpointEvery, keep: 2 },
      resume: resumeFrom ? true : undefined,
      signal: options.signal,
      distributed: group,
      onStep: async (info) => {
        options.onStep?.(info);
        if (info.step % r.validationEvery === 0 && info.step < r.steps) await writeOnMainRank(group, () => validate(info.step));
      },
    });
  } catch (error) {
    parts.unfuse();
    parts.dispose();
    parts.eval();
    for (const t of embeddings.values()) t.dispose();
    instances.held?.dispose();
    throw error;
  }
  let result: Awaited<ReturnType<Trainer["run"]>>;
  try {
    result = await trainer.run();
    parts.fuse();
    if (!result.aborted) await writeOnMainRank(group, () => validate(result.step));
  } catch (error) {
    parts.fuse(); // the model keeps what was trained
    parts.dispose();
    throw error;
  } finally {
    trainer.dispose();
    for (const t of embeddings.values()) t.dispose();
    instances.held?.dispose();
    parts.eval();
  }
  const recent = result.losses.slice(-50);
  const meanLoss = recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  const summary = {
    step: result.step, losses: result.losses, aborted: result.aborted, resumedFrom: resumeFrom?.step ?? null, identifier: r.identifier,
    instancePrompt: r.instancePrompt, classPrompt: r.classPrompt, classImages, validation, meanLoss,
  };
  if (result.aborted) {
    parts.dispose();
    return { ...summary, out: null };
  }
  const lora = parts.unetLoRA;
  const record = {
    method: "dreambooth", from: model.dir, ...options.record, identifier: r.identifier, instancePrompt: r.instancePrompt, classPrompt: r.classPrompt,
    priorPreservation: r.priorPreservation, priorLossWeight: r.priorLossWeight, numClassImages: r.priorPreservation ? r.numClassImages : 0,
    steps: result.step, batchSize: r.batchSize, lr: r.lr, seed: r.seed, objective: objective.objective, finalLossAvg50: meanLoss,
    centerCrop: options.centerCrop ?? false, randomFlip: options.randomFlip ?? false, trainTextEncoder,
    lora: lora ? { rank: lora.rank, alpha: lora.alpha, targets: lora.targets, file: LORA_WEIGHTS_FILE, ...(parts.textEncoderLoRA ? { textEncoderTargets: parts.textEncoderLoRA.targets } : {}) } : null,
    ...(group ? { distributed: { worldSize: group.worldSize, backend: group.backend } } : {}),
    base: baseRecord(model.dir!),
  };
  await writeOnMainRank(group, () => {
    copyModelDir(model.dir!, r.out, parts.components);
    parts.write(r.out);
    replaceFileAtomic(recordFile, (temp) => fs.writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`));
    writeDirectoryChecksums(r.out);
  }).finally(() => parts.dispose());
  return { ...summary, out: r.out };
}
