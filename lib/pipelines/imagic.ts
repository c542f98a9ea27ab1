/**
 * Imagic (Kawar et al., "Imagic: Text-Based Real Image Editing with Diffusion Models", CVPR
 * 2023): edit one real image along a target text in three stages.
 *
 * 1. Encode the target text to e_tgt and optimize the embedding alone, e_opt, with the
 *    denoising loss on the input image (the model frozen): e_opt reconstructs the image.
 * 2. Freeze e_opt and fine-tune the denoiser on the same loss, so that e_opt reproduces the
 *    image faithfully (here on a copy of the U-Net: the model passed in stays as it was).
 * 3. Generate from ē = η·e_tgt + (1−η)·e_opt with the fine-tuned denoiser: η near 0 gives
 *    the input back, larger η moves toward the text (the paper's sweet spot is 0.6–0.8).
 *
 * The loss is the model's own training objective (its scheduler config's prediction type and
 * noise schedule). Stage 2 runs on the generic Trainer, so it checkpoints, resumes to the same
 * weights and stops on `signal` like any training. The paper also fine-tunes its
 * super-resolution stages on e_tgt; single-stage models (all this package loads today) have
 * none, so that step is skipped.
 *
 * With `lora`, stage 2 trains low-rank adapters on the U-Net copy instead of all its weights
 * (optimizer state and checkpoints for the adapters only); they are fused into the copy at the
 * end and, with `dir`, also written as `pytorch_lora_weights.safetensors`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { enableGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import { mseLoss } from "../functional";
import type { ImageSource } from "../image";
import { UNet2DConditionModel, type DiffusionModel, type TextToImageModel } from "../models";
import { AdamW } from "../optim";
import { loadValue, replaceFileAtomic, save } from "../serialize";
import { load } from "../module";
import { Generator, randn, tidyAsync, keep, tidy, type Tensor } from "../tensor";
import { tensorDataset } from "../training/data";
import { alphasCumprodFor, noisedBatch, sampleTimes } from "../training/objectives";
import { trainingObjective } from "../training/fine_tune";
import { independentCopy, Trainer } from "../training/trainer";
import { LORA_ATTENTION_TARGETS, LORA_WEIGHTS_FILE, LoRA, type LoRAOptions } from "../training/lora";
import { throwIfAborted } from "./common";
import { Text2ImagePipeline, type GenerateOptions, type PipelineOutput } from "./text2img";

export interface ImagicProgress {
  stage: "embedding" | "fineTune";
  step: number;
  total: number;
  loss: number;
}

export interface ImagicOptions {
  model: DiffusionModel;
  /** The real image to edit: a file, Buffer or (1, C, H, W) tensor in [0, 1]. */
  image: ImageSource;
  /** What the edited image should show, e.g. "a photo of a sandal". */
  targetPrompt: string;
  /** Stage 1 steps (Adam on the embedding). Default 100, as the paper. */
  embeddingSteps?: number;
  /** Stage 1 learning rate. Default 1e-3, as the paper. */
  embeddingLr?: number;
  /** Stage 2 steps. Default 1500, as the paper. */
  fineTuneSteps?: number;
  /** Stage 2 learning rate. Default 2e-6 (diffusers' community Imagic pipeline for Stable Diffusion; the paper's 5e-7 is Imagen's), 1e-4 with `lora`. */
  fineTuneLr?: number;
  /** Which U-Net parameters stage 2 trains, by name. Default all. */
  trainable?: (name: string) => boolean;
  /** Stage 2 trains low-rank adapters (e.g. `{ rank: 4 }`) instead of the U-Net's weights. Not with `trainable`. Default off. */
  lora?: LoRAOptions;
  /** Seed of the image's latent draw and both stages' noise and timesteps. Default 0. */
  seed?: number;
  /**
   * A folder for the results and checkpoints: `embeddings.pt` after stage 1, `checkpoints/`
   * during stage 2, `unet.pt` and `imagic.json` at the end. A rerun with the same options
   * resumes where the last one stopped and reuses what is done.
   */
  dir?: string;
  /** Stage 2 steps between checkpoints (with `dir`). Default 100. */
  checkpointEvery?: number;
  signal?: AbortSignal;
  onProgress?: (info: ImagicProgress) => void;
}

export interface ImagicEditOptions extends Omit<GenerateOptions, "prompt" | "promptEmbeds" | "negativePromptEmbeds"> {
  /** Interpolation weight of the target embedding: ē = η·e_tgt + (1−η)·e_opt. Default 0.7. */
  eta?: number;
}

/**
 * What {@link imagic} returns: the two embeddings, the fine-tuned model and the stage-3 edit.
 * Dispose it to free the embeddings and the fine-tuned U-Net copy.
 */
export class ImagicResult {
  constructor(
    /** e_tgt (1, T, D). */
    readonly targetEmbedding: Tensor,
    /** e_opt (1, T, D). */
    readonly embedding: Tensor,
    /** The model with the fine-tuned U-Net (a copy; the original model is untouched). */
    readonly model: TextToImageModel,
  ) {}

  /** ē = η·e_tgt + (1−η)·e_opt. @example const e = result.interpolate(0.7); */
  interpolate(eta: number): Tensor {
    assertNumber(eta, "eta");
    return tidy(() => this.targetEmbedding.mul(eta).add(this.embedding.mul(1 - eta)));
  }

  /**
   * Stage 3: images from ē with the fine-tuned model. Use the same `generator` seed for every
   * η of a sweep, as the paper does.
   * @example const { images } = await result.generate({ eta: 0.7, guidanceScale: 2, generator: new Generator(0) });
   */
  async generate(options: ImagicEditOptions = {}): Promise<PipelineOutput> {
    const { eta = 0.7, ...rest } = options;
    const promptEmbeds = this.interpolate(eta);
    try {
      return await new Text2ImagePipeline(this.model).generate({ ...rest, promptEmbeds });
    } finally {
      promptEmbeds.dispose();
    }
  }

  dispose(): void {
    this.targetEmbedding.dispose();
    this.embedding.dispose();
    this.model.unet.dispose();
  }
}

/** The paper's default η sweep. */
export const IMAGIC_ETAS = [0.6, 0.65, 0.7, 0.75, 0.8] as const;

interface Resolved {
  embeddingSteps: number;
  embeddingLr: number;
  fineTuneSteps: number;
  fineTuneLr: number;
  seed: number;
  checkpointEvery: number;
}

function resolve(o: ImagicOptions): Resolved {
  if (o === null || typeof o !== "object") throw invalid("options object", "imagic options", o);
  if (typeof o.targetPrompt !== "string") throw invalid("string", "imagic targetPrompt", o.targetPrompt);
  const r = {
    embeddingSteps: o.embeddingSteps ?? 100,
    embeddingLr: o.embeddingLr ?? 1e-3,
    fineTuneSteps: o.fineTuneSteps ?? 1500,
    fineTuneLr: o.fineTuneLr ?? (o.lora ? 1e-4 : 2e-6),
    seed: o.seed ?? 0,
    checkpointEvery: o.checkpointEvery ?? 100,
  };
  assertInteger(r.embeddingSteps, "imagic embeddingSteps", 0);
  assertInteger(r.fineTuneSteps, "imagic fineTuneSteps", 0);
  assertInteger(r.seed, "imagic seed", 0);
  assertInteger(r.checkpointEvery, "imagic checkpointEvery", 1);
  for (const name of ["embeddingLr", "fineTuneLr"] as const) {
    assertNumber(r[name], `imagic ${name}`);
    if (!(r[name] >= 0)) throw invalid("non-negative number", `imagic ${name}`, r[name]);
  }
  if (o.trainable !== undefined && typeof o.trainable !== "function") throw invalid("function (name) => boolean", "imagic trainable", o.trainable);
  if (o.lora !== undefined && (o.lora === null || typeof o.lora !== "object")) throw invalid("LoRA options object", "imagic lora", o.lora);
  if (o.lora && o.trainable) throw new Error("imagic: lora and trainable: give one (with lora only the adapters train)");
  if (o.dir !== undefined && typeof o.dir !== "string") throw invalid("folder path", "imagic dir", o.dir);
  return r;
}

/**
 * Runs Imagic's stages 1 and 2 on one image and returns what stage 3 needs. With `dir`, a
 * rerun resumes (or reuses finished stages); an abort stops after the current step (stage 2
 * writes a checkpoint) and throws an AbortError.
 * @example
 * const result = await imagic({ model, image: "shirt.png", targetPrompt: "a photo of a dress", fineTuneSteps: 300, fineTuneLr: 1e-4 });
 * for (const eta of IMAGIC_ETAS) await writeImage((await result.generate({ eta, generator: new Generator(0) })).images.index(0), `eta-${eta}.png`);
 */
export async function imagic(options: ImagicOptions): Promise<ImagicResult> {
  const r = resolve(options);
  const model = (options.model as DiffusionModel)?.requireTextToImage?.("imagic");
  if (!model) throw invalid("DiffusionModel (from loadModel)", "imagic model", options.model);
  const objective = trainingObjective(model.schedulerConfig ?? {});
  const dir = options.dir === undefined ? undefined : path.resolve(options.dir);
  if (dir) fs.mkdirSync(dir, { recursive: true });
  // What determines the results (checkpoint spacing does not): a rerun reuses work only when these match.
  const { checkpointEvery: _, ...determining } = r;
  const lora = options.lora && { rank: options.lora.rank ?? 4, alpha: options.lora.alpha ?? options.lora.rank ?? 4, targets: String(options.lora.targets ?? LORA_ATTENTION_TARGETS), init: options.lora.init ?? "gaussian" };
  const record = { targetPrompt: options.targetPrompt, ...determining, objective: objective.objective, lora };

  // The image in model space: one seeded posterior draw for latent models.
  const image = await model.readImages(options.image, { who: "imagic image" });
  const x0 = await model.imagesToLatents(image, new Generator(r.seed)).finally(() => image.dispose()); // (1, c, h, w)
  let targetEmbedding: Tensor | undefined;
  let embedding: Tensor | undefined;
  let unet: UNet2DConditionModel | undefined;
  try {
    if (x0.shape[0] !== 1) throw new Error(`imagic: expected one image but received ${x0.shape[0]}`);
    targetEmbedding = await model.encodePrompt([options.targetPrompt]); // (1, T, D)

    // Stage 1: e_opt, or the one a previous run of these options saved.
    const embeddingsFile = dir && path.join(dir, "embeddings.pt");
    const saved = embeddingsFile && fs.existsSync(embeddingsFile) ? (loadValue(embeddingsFile) as { record: string; optimized: Tensor; target: Tensor }) : null;
    if (saved && saved.record === JSON.stringify(record)) {
      embedding = saved.optimized;
      saved.target.dispose();
    } else {
      if (saved) for (const t of [saved.optimized, saved.target]) t.dispose();
      embedding = await optimizeEmbedding(model, x0, targetEmbedding, r, objective, options);
      if (embeddingsFile) save({ record: JSON.stringify(record), optimized: embedding, target: targetEmbedding }, embeddingsFile);
    }

    // Stage 2: fine-tune a copy of the U-Net with e_opt frozen.
    unet = new UNet2DConditionModel(independentCopy(model.unet.module, () => true), model.unet.config as Record<string, unknown>, model.unet.meta);
    const tuned = model.with({ unet }).requireTextToImage("imagic");
    const unetFile = dir && path.join(dir, "unet.pt");
    const recordFile = dir && path.join(dir, "imagic.json");
    const done = unetFile && recordFile && fs.existsSync(unetFile) && fs.existsSync(recordFile) && fs.readFileSync(recordFile, "utf8") === `${JSON.stringify(record, null, 2)}\n`;
    if (done) {
      unet.dispose();
      unet = new UNet2DConditionModel(load(unetFile, { device: model.device }), model.unet.config as Record<string, unknown>, model.unet.meta);
      return new ImagicResult(targetEmbedding, embedding, model.with({ unet }).requireTextToImage("imagic"));
    }
    await fineTuneOnImage(tuned, x0, embedding, r, objective, options, dir);
    if (unetFile && recordFile) {
      replaceFileAtomic(unetFile, (temp) => unet!.module.save(temp));
      replaceFileAtomic(recordFile, (temp) => fs.writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`));
    }
    return new ImagicResult(targetEmbedding, embedding, tuned);
  } catch (error) {
    for (const t of [targetEmbedding, embedding]) t?.dispose();
    unet?.dispose();
    throw error;
  } finally {
    x0.dispose();
  }
}

/** Stage 1: Adam on the embedding alone; the U-Net's parameters stop requiring grad meanwhile. */
async function optimizeEmbedding(model: TextToImageModel, x0: Tensor, target: Tensor, r: Resolved, objective: ReturnType<typeof trainingObjective>, o: ImagicOptions): Promise<Tensor> {
  const embedding = keep(tidy(() => target.detach().clone().requiresGrad_(true)));
  const params = model.unet.parameters();
  const wanted = params.map((p) => p.requiresGrad);
  for (const p of params) p.requiresGrad = false;
  const optimizer = new AdamW([embedding], { lr: r.embeddingLr, weightDecay: 0 });
  const generator = new Generator(r.seed);
  const schedule = { alphasCumprod: objective.objective === "flow_matching" ? [] : alphasCumprodFor(objective.noiseSchedule), flowTimestepScale: objective.flowTimestepScale };
  try {
    for (let step = 1; step <= r.embeddingSteps; step++) {
      throwIfAborted(o.signal);
      const loss = await tidyAsync(async () => {
        const noise = randn(x0.shape, { generator }).to({ device: x0.device }); // (1, c, h, w)
        const times = sampleTimes(objective.objective, 1, objective.timestepSampling ?? { kind: "uniform" }, schedule.alphasCumprod.length, generator);
        const { noisy, target: wantedOutput, modelTimesteps } = noisedBatch(objective.objective, x0, noise, times, schedule);
        return enableGrad(() => {
          const prediction = model.predictSync({ sample: noisy, timestep: modelTimesteps, encoderHiddenStates: embedding });
          const value = mseLoss(prediction.float(), wantedOutput.float());
          value.backward();
          return value.item();
        });
      });
      optimizer.update();
      optimizer.zeroGrad();
      o.onProgress?.({ stage: "embedding", step, total: r.embeddingSteps, loss });
      await new Promise((resolve) => setImmediate(resolve)); // let abort events land
    }
    return keep(tidy(() => embedding.detach().clone()));
  } finally {
    params.forEach((p, i) => {
      p.requiresGrad = wanted[i];
      p.dispose();
    });
    optimizer.dispose();
    embedding.dispose();
  }
}

/** Stage 2: the Trainer on a one-image dataset, conditioned on the frozen e_opt. */
async function fineTuneOnImage(model: TextToImageModel, x0: Tensor, embedding: Tensor, r: Resolved, objective: ReturnType<typeof trainingObjective>, o: ImagicOptions, dir?: string): Promise<void> {
  if (r.fineTuneSteps === 0) return;
  const frozen = keep(tidy(() => embedding.detach()));
  const lora = o.lora ? LoRA.create(model.unet.module, { ...o.lora, seed: o.lora.seed ?? r.seed + 2 }) : null;
  const release = () => {
    frozen.dispose();
    lora?.dispose();
  };
  let trainer: Trainer;
  try {
    trainer = new Trainer(model.unet.module, tensorDataset(x0), {
      ...objective,
      steps: r.fineTuneSteps,
      batchSize: 1,
      seed: r.seed + 1,
      lr: r.fineTuneLr,
      lrSchedule: { kind: "constant", warmupSteps: 0 },
      optimizer: { weightDecay: 0 },
      trainable: o.trainable,
      parameters: lora?.parameters(),
      condition: () => frozen,
      forward: (_module, sample, timestep, batch) => {
        lora?.apply();
        return model.predictSync({ sample, timestep, encoderHiddenStates: batch.cond as Tensor });
      },
      checkpoint: dir ? { dir: path.join(dir, "checkpoints"), every: r.checkpointEvery, keep: 2 } : undefined,
      resume: dir ? true : undefined,
      signal: o.signal,
      onStep: ({ step, loss }) => o.onProgress?.({ stage: "fineTune", step, total: r.fineTuneSteps, loss }),
    });
  } catch (error) {
    release();
    throw error;
  }
  try {
    const result = await trainer.run();
    model.unet.eval();
    lora?.fuse();
    if (result.aborted) throwIfAborted(o.signal);
    if (lora && dir) lora.save(path.join(dir, LORA_WEIGHTS_FILE));
  } finally {
    trainer.dispose();
    release();
  }
}
