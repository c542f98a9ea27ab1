/**
 * The model object every pipeline and training method works through: a loaded model
 * directory's networks plus the four things each method needs from them, in one place —
 *
 * 1. prompt encoding: tokenizer + text encoder, CLIP skip (`encodePrompt`);
 * 2. the image codec: the VAE with its scaling and shift, or the identity for pixel-space
 *    models (`encode`/`decode` in [-1, 1], `imagesToLatents`/`latentsToImages` in [0, 1],
 *    `readImages` for anything sharp reads);
 * 3. shapes: `sampleSize`, `imageChannels`, `latentChannels`, `latentShape(batch)`;
 * 4. one named denoiser call (`predict`/`predictSync`), used by pipelines and training alike.
 *
 * Like diffusers' `VaeImageProcessor` and `encode_prompt`, it keeps pipelines short
 * compositions of named stages. It runs without autograd except `predict`, whose grad mode
 * is the caller's (training needs the graph, sampling does not).
 */
import * as os from "node:os";
import { noGrad } from "../autograd";
import { invalid } from "../errors";
import { toImageTensor, type ImageSource } from "../image";
import { schedulerFromConfig, type Scheduler } from "../schedulers";
import { tidy, type Generator, type Tensor } from "../tensor";
import type { CLIPTokenizer } from "../tokenizers";
import type { CLIPTextModel, CLIPTextModelWithProjection } from "./clip";
import type { DiTTransformer2DModel } from "./dit";
import type { UNet2DConditionModel } from "./unet";
import type { AutoencoderKL } from "./vae";
import { modelDefaults, type ModelDefaults } from "./defaults";

export { modelDefaults, type ModelDefaults };

/** `model_index.json`: diffusers' entries plus our "torch_diffusion" section. */
export interface ModelIndex {
  _class_name?: string;
  _diffusers_version?: string;
  torch_diffusion?: {
    format_version?: number;
    dtype?: string;
    fused_attention?: boolean;
    components?: Record<string, Record<string, unknown>>;
    skipped?: Record<string, string>;
    /** The model's recommended sampling settings (see {@link ModelDefaults}). */
    defaults?: { guidance_scale?: number; num_inference_steps?: number; scheduler?: string };
  };
  [name: string]: unknown;
}

/** The networks and helpers a model may have; what a model directory's entries load into. */
export interface ModelParts {
  unet?: UNet2DConditionModel;
  transformer?: DiTTransformer2DModel;
  /** Absent for pixel-space models. */
  vae?: AutoencoderKL;
  textEncoder?: CLIPTextModel | CLIPTextModelWithProjection;
  textEncoder2?: CLIPTextModelWithProjection | CLIPTextModel;
  tokenizer?: CLIPTokenizer;
  tokenizer2?: CLIPTokenizer;
  /** The default scheduler, built from `schedulerConfig`; absent when it names a scheduler this package lacks. */
  scheduler?: Scheduler;
  /** `scheduler/scheduler_config.json` as read. */
  schedulerConfig?: Record<string, unknown>;
}

/** Named inputs of {@link DiffusionModel.predict}. */
export interface PredictArgs {
  /** The denoiser's input (B, C, h, w): noisy latents, with any extra channels already concatenated. */
  sample: Tensor;
  /** A number, number[] or Tensor of shape (), (1,) or (B,). */
  timestep: number | number[] | Tensor;
  /** Text-conditioned U-Nets: the prompt context (B, T, D). */
  encoderHiddenStates?: Tensor;
  /** Class-conditional transformers (DiT): class ids (B). */
  classLabels?: number | number[] | Tensor;
}

/** A model with everything text-to-image methods need. */
export type TextToImageModel = DiffusionModel & Required<Pick<ModelParts, "unet" | "textEncoder" | "tokenizer" | "scheduler">>;

/**
 * A loaded diffusion model. `loadModel(dir)` returns one; `new DiffusionModel(parts)` builds
 * one from networks loaded some other way.
 * @example
 * const model = loadModel("builtin");
 * const context = await model.encodePrompt(["a photo of a sneaker"]);    // (1, 77, D)
 * const noise = randn(model.latentShape(1));                              // (1, C, h, w)
 * const eps = await noGradAsync(() => model.predict({ sample: noise, timestep: 999, encoderHiddenStates: context }));
 * const images = await model.latentsToImages(noise);                      // (1, C, H, W) in [0, 1]
 */
export class DiffusionModel implements ModelParts {
  /** The model directory it was loaded from, if any. */
  readonly dir: string | null;
  readonly modelIndex: ModelIndex;
  readonly unet?: UNet2DConditionModel;
  readonly transformer?: DiTTransformer2DModel;
  readonly vae?: AutoencoderKL;
  readonly textEncoder?: CLIPTextModel | CLIPTextModelWithProjection;
  readonly textEncoder2?: CLIPTextModelWithProjection | CLIPTextModel;
  readonly tokenizer?: CLIPTokenizer;
  readonly tokenizer2?: CLIPTokenizer;
  /** The scheduler pipelines use when a call names none (each call steps a fresh copy of it). */
  scheduler?: Scheduler;
  readonly schedulerConfig?: Record<string, unknown>;
  /**
   * The sampling settings the model recommends (model_index.json's `torch_diffusion.defaults`);
   * pipelines use them when a call gives none. Change them to change every later call's defaults.
   */
  defaults: ModelDefaults;

  constructor(parts: ModelParts, source: { dir?: string; modelIndex?: ModelIndex } = {}) {
    if (parts === null || typeof parts !== "object") throw invalid("object of model parts", "DiffusionModel parts", parts);
    Object.assign(this, pick(parts));
    this.dir = source.dir ?? null;
    this.modelIndex = source.modelIndex ?? {};
    this.defaults = modelDefaults(this.modelIndex);
  }

  /**
   * A model sharing this one's networks with some parts replaced (a widened U-Net, no VAE...).
   * Disposing either disposes the shared networks.
   * @example const pixel = model.with({ vae: undefined });
   */
  with(changes: ModelParts): DiffusionModel {
    const model = new DiffusionModel({ ...pick(this), ...pick(changes, true) }, { dir: this.dir ?? undefined, modelIndex: this.modelIndex });
    model.defaults = { ...this.defaults };
    return model;
  }

  /** The denoising network: the U-Net, else the transformer. */
  get denoiser(): UNet2DConditionModel | DiTTransformer2DModel {
    const denoiser = this.unet ?? this.transformer;
    if (!denoiser) throw new Error(`${this.describe()} has no denoiser (unet or transformer)`);
    return denoiser;
  }

  /** Where the denoiser runs ("cpu", "cuda:0"). */
  get device(): string {
    return this.denoiser.device;
  }

  /** Pixels per latent along each side: the VAE's downsampling, 1 in pixel space. */
  get vaeScaleFactor(): number {
    return this.vae ? this.vae.downsampleFactor : 1;
  }

  /** Channels the denoiser works on: the VAE's latent channels, or the image's in pixel space. */
  get latentChannels(): number {
    if (this.vae) return this.vae.config.latent_channels;
    if (this.unet) return this.unet.config.out_channels;
    return this.denoiser.config.in_channels;
  }

  /** Channels of the images the model reads and writes: the VAE's, or the denoiser's in pixel space (1 = gray). */
  get imageChannels(): number {
    return this.vae ? (this.vae.config.in_channels ?? 3) : this.latentChannels;
  }

  /** The image side the model was trained at, in pixels: the denoiser's sample size times the VAE's factor. */
  get sampleSize(): number {
    const size = this.denoiser.config.sample_size ?? 64;
    return (Array.isArray(size) ? size[0] : size) * this.vaeScaleFactor;
  }

  /**
   * The shape of `batch` latents for images of `height` × `width` pixels (default the sample size).
   * @example model.latentShape(4); // [4, 4, 64, 64] for SD 1.5
   */
  latentShape(batch: number, size: { height?: number; width?: number } = {}): number[] {
    const factor = this.vaeScaleFactor;
    const height = size.height ?? this.sampleSize;
    const width = size.width ?? this.sampleSize;
    for (const [name, value] of [["height", height], ["width", width]] as const) {
      if (!Number.isInteger(value) || value < 1) throw invalid("positive integer", name, value);
      if (value % factor !== 0) throw invalid(`multiple of ${factor}`, name, value);
    }
    if (!Number.isInteger(batch) || batch < 1) throw invalid("positive integer", "batch", batch);
    return [batch, this.latentChannels, height / factor, width / factor];
  }

  /**
   * A rough upper estimate of the memory one denoiser call over `batch` latents of images
   * `height` × `width` needs (bytes): the activations of each resolution level (about 16
   * tensors of its width alive at the peak), plus, without fused attention, the attention
   * score matrices of the largest level that attends (heads · (hw)², three copies: scores,
   * probabilities and their softmax temporaries). Calibrated on the built-in model and the
   * tiny SD fixture at 1.2–1.5× the measured peaks; training keeps about three times as much.
   * @example model.estimateDenoiseBytes(2, { height: 512, width: 512 }) // SD 1.5, CFG on one image
   */
  estimateDenoiseBytes(batch: number, size: { height?: number; width?: number } = {}): number {
    const [, , h, w] = this.latentShape(1, size);
    const config = this.denoiser.config as Record<string, unknown>;
    if (!this.unet) return batch * 64 * this.latentChannels * h * w * 4; // transformers: tokens × width, rough
    const widths = (config.block_out_channels as number[] | undefined) ?? [320, 640, 1280, 1280];
    const attends = ((config.down_block_types as string[] | undefined) ?? []).map((t) => t.includes("Attn"));
    const headsOf = (i: number): number => {
      const heads = config.num_attention_heads ?? config.attention_head_dim ?? 8;
      return Array.isArray(heads) ? Number(heads[i] ?? heads.at(-1)) : Number(heads);
    };
    let activations = 0;
    let attention = 0;
    widths.forEach((channels, i) => {
      const pixels = Math.ceil(h / 2 ** i) * Math.ceil(w / 2 ** i);
      activations += 16 * channels * pixels * 4;
      const last = i === widths.length - 1; // the mid block attends at the lowest level
      if ((attends[i] || last) && !this.unet!.meta.fused_attention) attention = Math.max(attention, 3 * headsOf(i) * pixels * pixels * 4);
    });
    return batch * (activations + attention);
  }

  /**
   * Throws, before any work, when {@link estimateDenoiseBytes} exceeds the memory this process
   * may use: on the CPU 90% of the machine's memory, or `TORCH_DIFFUSION_MEMORY_LIMIT_MB`.
   * (GPU calls are not checked: libtorch reports CUDA out of memory itself, and recovers.)
   * @example model.checkMemory(8, { height: 512, width: 512 }, "generate");
   */
  checkMemory(batch: number, size: { height?: number; width?: number }, who: string, factor = 1): void {
    if (!this.device.startsWith("cpu")) return;
    const fromEnv = Number(process.env.TORCH_DIFFUSION_MEMORY_LIMIT_MB);
    const limit = Number.isFinite(fromEnv) && fromEnv > 0 ? fromEnv * 2 ** 20 : 0.9 * os.totalmem();
    const needed = factor * this.estimateDenoiseBytes(batch, size);
    if (needed <= limit) return;
    const [, , h, w] = this.latentShape(1, size);
    const gb = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 34 ? 1 : 0)} GiB`;
    throw new Error(
      `${who}: ${batch} denoiser inputs of ${h * this.vaeScaleFactor}×${w * this.vaeScaleFactor} would need about ${gb(needed)}, ` +
        `more than the ${gb(limit)} limit (90% of this machine's memory, or TORCH_DIFFUSION_MEMORY_LIMIT_MB): use fewer images or a smaller size`,
    );
  }

  /**
   * Encodes texts with the tokenizer and text encoder, without autograd: the last hidden
   * state, or with `clipSkip` k the hidden state k layers earlier through the final norm
   * (diffusers' `clip_skip`).
   * @example const context = await model.encodePrompt(["a photo of a cat"]); // (1, 77, 768)
   */
  async encodePrompt(texts: string[], options: { clipSkip?: number } = {}): Promise<Tensor> {
    const { textEncoder, tokenizer } = this;
    if (!textEncoder || !tokenizer) throw new Error(`${this.describe()} has no ${textEncoder ? "tokenizer" : "text_encoder"}: it cannot encode prompts`);
    if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) throw invalid("string[]", "encodePrompt texts", texts);
    const clipSkip = options.clipSkip ?? 0;
    const { inputIds } = tokenizer.encode(texts, { maxLength: tokenizer.modelMaxLength, padding: "max_length" });
    if (clipSkip === 0) {
      const output = await noGrad(() => textEncoder.forward({ inputIds }));
      for (const [name, t] of Object.entries(output)) if (name !== "lastHiddenState") (t as Tensor | undefined)?.dispose();
      return output.lastHiddenState; // (B, T, D)
    }
    const states = await noGrad(() => textEncoder.hiddenStates({ inputIds })); // layers + 1 of (B, T, D)
    try {
      if (!Number.isInteger(clipSkip) || clipSkip < 0 || clipSkip >= states.length - 1) {
        throw invalid(`integer in [0, ${states.length - 2}] for this ${states.length - 1}-layer text encoder`, "clipSkip", clipSkip);
      }
      return await noGrad(() => textEncoder.finalLayerNorm(states[states.length - 1 - clipSkip]));
    } finally {
      for (const t of states) t.dispose();
    }
  }

  /**
   * Images in [-1, 1] (B, imageChannels, H, W) -> model space: one posterior draw of the VAE
   * (or with `{ mean: true }` the posterior's mean, deterministic without a generator),
   * `(z - shift) · scaling`; pixel-space models return a copy.
   * @example const latents = await model.encode(images.mul(2).sub(1), new Generator(0));
   */
  async encode(images: Tensor, generator?: Generator, options: { mean?: boolean } = {}): Promise<Tensor> {
    const vae = this.vae;
    if (!vae) return noGrad(() => images.clone());
    const posterior = await noGrad(() => vae.encode(images));
    try {
      return noGrad(() => tidy(() => vae.scaleLatents(options.mean ? posterior.mean : posterior.sample(generator))));
    } finally {
      posterior.dispose();
    }
  }

  /** Model space -> images in [-1, 1] (unclamped, the decoder's dtype). @example const x = await model.decode(latents); */
  async decode(latents: Tensor): Promise<Tensor> {
    const vae = this.vae;
    if (!vae) return noGrad(() => latents.clone());
    const z = noGrad(() => tidy(() => vae.unscaleLatents(latents)));
    return noGrad(() => vae.decode(z)).finally(() => z.dispose());
  }

  /** Images in [0, 1] -> model space (see {@link encode}). @example const latents = await model.imagesToLatents(await model.readImages("in.png")); */
  async imagesToLatents(images: Tensor, generator?: Generator, options: { mean?: boolean } = {}): Promise<Tensor> {
    const x = noGrad(() => tidy(() => images.mul(2).sub(1)));
    return this.encode(x, generator, options).finally(() => x.dispose());
  }

  /** Model space -> float32 images in [0, 1], clamped. @example await writeImage(imageGrid(await model.latentsToImages(latents)), "out.png"); */
  async latentsToImages(latents: Tensor): Promise<Tensor> {
    const decoded = await this.decode(latents);
    try {
      return noGrad(() => tidy(() => decoded.div(2).add(0.5).clamp(0, 1).float()));
    } finally {
      decoded.dispose();
    }
  }

  /**
   * Reads images (files, Buffers or tensors in [0, 1]) as float32 (B, imageChannels, H, W) in
   * [0, 1]; files are resized to `width`/`height` when given. H and W must be multiples of
   * the VAE's factor.
   * @example const image = await model.readImages("strokes.png");
   */
  async readImages(source: ImageSource, options: { width?: number; height?: number; who?: string } = {}): Promise<Tensor> {
    const who = options.who ?? "image";
    const channels = this.imageChannels;
    const isFile = typeof source === "string" || Buffer.isBuffer(source);
    if (isFile && channels !== 1 && channels !== 3) throw new Error(`${who}: the model works on ${channels}-channel images, which image files cannot hold; pass a tensor`);
    const image = await toImageTensor(source, isFile ? { channels: channels as 1 | 3, width: options.width, height: options.height } : {});
    const [, c, height, width] = image.shape;
    const factor = this.vaeScaleFactor;
    const problem =
      c !== channels ? `${who}: the model works on ${channels}-channel images but the image has ${c} channels`
      : height % factor !== 0 || width % factor !== 0 ? `${who}: height and width must be multiples of ${factor} but the image is ${height}×${width}`
      : null;
    if (problem === null && image.dtype === "float32") return image;
    try {
      if (problem !== null) throw new Error(problem);
      return image.float();
    } finally {
      image.dispose();
    }
  }

  /**
   * [async] The denoiser's prediction for `sample` at `timestep` (noise, v or x₀, as its
   * scheduler config's `prediction_type` says), in the denoiser's dtype.
   * @example const eps = await model.predict({ sample: latents, timestep: 981, encoderHiddenStates: context });
   */
  predict(args: PredictArgs): Promise<Tensor> {
    if (this.unet) return this.unet.forward(this.unetArgs(args));
    return this.denoiser.forward(this.transformerArgs(args) as never);
  }

  /** [sync] The twin of {@link predict} (training calls it inside backward-recorded steps). */
  predictSync(args: PredictArgs): Tensor {
    if (this.unet) return this.unet.forwardSync(this.unetArgs(args));
    return (this.denoiser as DiTTransformer2DModel).forwardSync(this.transformerArgs(args));
  }

  private unetArgs(args: PredictArgs) {
    if (args?.encoderHiddenStates === undefined) throw new Error("predict: this U-Net is text-conditioned and needs encoderHiddenStates");
    const inChannels = this.unet!.config.in_channels;
    const channels = args.sample?.shape?.[1];
    if (channels !== undefined && channels !== inChannels) {
      // An InstructPix2Pix U-Net reached by a text-to-image method is the likely case: say so rather than let the convolution fail.
      const hint = channels === this.latentChannels ? ` (its extra ${inChannels - channels} channels take an input image: an InstructPix2Pix model, edit with InstructPix2PixPipeline or torch-diffusion instruct)` : "";
      throw new Error(`predict: ${this.describe()}'s U-Net takes ${inChannels} input channels but the sample has ${channels}${hint}`);
    }
    return { sample: args.sample, timestep: args.timestep, encoderHiddenStates: args.encoderHiddenStates };
  }

  private transformerArgs(args: PredictArgs) {
    if (args?.classLabels === undefined) throw new Error("predict: this transformer is class-conditional and needs classLabels");
    return { hiddenStates: args.sample, timestep: args.timestep, classLabels: args.classLabels };
  }

  /**
   * A fresh scheduler with no timesteps set: of the default scheduler's class and config, or
   * of `className` (any diffusers scheduler class this package has) on the model's config.
   * Each pipeline call steps its own, so concurrent calls on one model cannot interfere.
   * @example const scheduler = model.newScheduler("EulerDiscreteScheduler");
   */
  newScheduler(className?: string): Scheduler {
    if (className === undefined) {
      if (!this.scheduler) throw new Error(`${this.describe()}: its scheduler ${String(this.schedulerConfig?._class_name)} is not supported; name one`);
      return this.scheduler.clone();
    }
    return schedulerFromConfig({ ...(this.schedulerConfig ?? {}), _class_name: className });
  }

  /**
   * Checks the model can run text-to-image methods (U-Net, text encoder, tokenizer, scheduler)
   * and returns it typed as such.
   * @example const model = loadModel(dir).requireTextToImage("generate");
   */
  requireTextToImage(who: string): TextToImageModel {
    const missing = ([["unet", "unet"], ["textEncoder", "text_encoder"], ["tokenizer", "tokenizer"]] as const).filter(([key]) => !this[key]).map(([, name]) => name);
    if (missing.length > 0) {
      const has = this.transformer ? ` (it has a ${this.transformer.className})` : "";
      throw new Error(`${who}: ${this.describe()} has no ${missing.join(", ")}${has}; this needs a text-conditioned U-Net model`);
    }
    if (this.unet!.needsAddedConditions) {
      // SDXL: the U-Net also wants the second text encoder's pooled embedding and the size/crop time ids, which no pipeline passes yet.
      throw new Error(
        `${who}: ${this.describe()} is an SDXL model (its U-Net has addition_embed_type "text_time"), which the pipelines and training do not support yet; ` +
          "its networks load and run directly (unet.forward({ sample, timestep, encoderHiddenStates, textEmbeds, timeIds }))",
      );
    }
    if (!this.scheduler) throw new Error(`${who}: ${this.describe()}: its scheduler ${String(this.schedulerConfig?._class_name)} is not supported; pick one (e.g. model.scheduler = model.newScheduler("DDIMScheduler"))`);
    return this as TextToImageModel;
  }

  /** Drops every network (see ModelComponent.dispose). */
  dispose(): void {
    for (const component of [this.unet, this.transformer, this.vae, this.textEncoder, this.textEncoder2]) component?.dispose();
  }

  private describe(): string {
    return this.dir ? `the model ${this.dir}` : "the model";
  }
}

const PART_KEYS = ["unet", "transformer", "vae", "textEncoder", "textEncoder2", "tokenizer", "tokenizer2", "scheduler", "schedulerConfig"] as const;

/** The model parts of an object; with `keepUndefined`, keys given as undefined too (to remove a part). */
function pick(parts: ModelParts, keepUndefined = false): ModelParts {
  const out: Record<string, unknown> = {};
  for (const key of PART_KEYS) if (parts[key] !== undefined || (keepUndefined && key in parts)) out[key] = parts[key];
  return out as ModelParts;
}
