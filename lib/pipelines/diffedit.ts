/**
 * DiffEdit (Couairon, Verbeek, Schwenk & Cord, "DiffEdit: Diffusion-based semantic image
 * editing with mask guidance", ICLR 2023): edit the part of an image a text change is about,
 * and keep the rest. Three stages, each a call of its own as in diffusers'
 * `StableDiffusionDiffEditPipeline` (`generate_mask`, `invert`, `__call__`), or one call:
 *
 * 1. Mask (`generateMask`): noise the input's latents to `maskEncodeStrength`, predict the
 *    noise under the target text (the paper's query Q) and the source text (its reference R)
 *    for `numMapsPerMask` noise draws, average |ε_Q − ε_R| over draws and channels, and
 *    binarise. Thresholding follows diffusers, not the paper: the map is clamped to
 *    `maskThresholdingRatio` (3) × its mean, divided by that, and kept where > 0.5, i.e. where
 *    it exceeds 1.5 × its mean; the paper rescales by the map's maximum and keeps > 0.5.
 *    Differences from diffusers: the mean is taken per image (diffusers takes it over the whole
 *    batch; the same for one image), and no classifier-free guidance is applied — diffusers
 *    guides both predictions with `guidance_scale`, which with equal negative prompts only
 *    scales the difference by that scale, which the normalisation removes. The difference of
 *    any parameterisation (ε, v or x₀) is a per-timestep multiple of the ε difference, so the
 *    model's raw output is compared, as diffusers does.
 * 2. Encoding (`invert`): DDIM-invert the input under the source text up to `inpaintStrength`
 *    (see ./inversion.ts; unguided by default — the paper encodes with no text at all, diffusers
 *    under the source text with guidance 7.5).
 * 3. Decoding (`edit`): DDIM-denoise the last inverted latent under the target text with
 *    guidance, replacing the latent outside the mask after each step with the inverted latent
 *    of the noise level just reached — and with the clean encoding after the last step, so the
 *    region outside the mask comes back as the codec renders the input; pixel-space models
 *    also get the input's pixels pasted back outside the mask, so there it is exact. (diffusers
 *    blends each step with the inverted latent one level noisier and never with the clean one.)
 */
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import { interpolate } from "../functional";
import { toImageTensor, type ImageSource } from "../image";
import { loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import type { Scheduler } from "../schedulers";
import { assertTensor, cat, isTensor, randn, stack, tidy, tidyAsync, where, type Generator, type Tensor } from "../tensor";
import { callGuidance, denoise, throwIfAborted, type ProgressInfo } from "./common";
import { timestepsForStrength } from "./img2img";
import { batchSize, checkInvertOptions, encodeClean, expandBatch, invertChecked, promptsFor, type Inversion } from "./inversion";
import { checkPrompts, promptContext, type PromptOptions, type Prompts } from "./prompts";
import type { PipelineOutput } from "./text2img";

/** DiffEdit's stages, as progress reports name them. */
export type DiffEditStage = "mask" | "invert" | "denoise";

/**
 * A DiffEdit progress report. `step`/`total` count the model passes of the whole call (a
 * one-call `edit` runs all three stages, so one bar fills once); `stage` says which is running.
 * In the mask stage `latents` are the noised input latents of the current draw.
 */
export interface DiffEditProgress extends ProgressInfo {
  stage: DiffEditStage;
}

interface CallOptions {
  signal?: AbortSignal;
  onProgress?: (info: DiffEditProgress) => void;
  generator?: Generator;
  /** Condition on the text encoder's hidden state this many layers before the last. Default 0. */
  clipSkip?: number;
  /** Latent models: encode with a draw from the VAE posterior (diffusers) instead of its mean. Default false. */
  samplePosterior?: boolean;
}

/** The two texts of a mask: what the image shows, and what it should show. */
export interface SourceTargetPrompts {
  /** What the input shows (the paper's reference text R): one text or one per image. */
  sourcePrompt?: string | string[];
  /** Text-encoder output (B, T, D) instead of `sourcePrompt`. */
  sourcePromptEmbeds?: Tensor;
  /** What it should show (the paper's query Q): one text or one per image. */
  targetPrompt?: string | string[];
  /** Text-encoder output (B, T, D) instead of `targetPrompt`. */
  targetPromptEmbeds?: Tensor;
}

/** How the mask is inferred; diffusers' `generate_mask` arguments and defaults. */
export interface MaskInferenceOptions {
  /** How far toward noise the input is taken before the two predictions, in (0, 1]. Default 0.5. */
  maskEncodeStrength?: number;
  /** Noise draws averaged into the map. Default 10. */
  numMapsPerMask?: number;
  /** The map is clamped to this multiple of its mean and divided by it before the 0.5 threshold. Default 3. */
  maskThresholdingRatio?: number;
}

/**
 * The options of {@link DiffEditPipeline.generateMask}.
 * @example const options: DiffEditMaskOptions = { image: "shirt.png", sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress" };
 */
export interface DiffEditMaskOptions extends CallOptions, SourceTargetPrompts, MaskInferenceOptions {
  /** File, Buffer or (1 or B, C, H, W) tensor in [0, 1] with the model's image channels. */
  image: ImageSource;
  /** DDIM steps of a full run: `maskEncodeStrength` picks the timestep of `timestepsForStrength` as img2img does. Default 50. */
  numInferenceSteps?: number;
}

/** An inferred mask: 1 where the edit goes, 0 where the image is kept. */
export interface DiffEditMask {
  /** (B, 1, h, w) float32 of 0 and 1 at latent resolution. */
  mask: Tensor;
  /** (B, 1, H, W): `mask` upsampled (nearest) to the image's size, for writing as an image. */
  imageMask: Tensor;
  /** (B, 1, h, w) in [0, 1]: the averaged difference map clamped and divided by ratio × mean, before the threshold. */
  map: Tensor;
}

/**
 * The options of {@link DiffEditPipeline.invert}: the source text and the input.
 * @example const options: DiffEditInvertOptions = { image: "shirt.png", prompt: "a photo of a shirt", inpaintStrength: 0.8 };
 */
export interface DiffEditInvertOptions extends CallOptions, Omit<PromptOptions, "numImagesPerPrompt" | "clipSkip"> {
  image: ImageSource;
  /** How far toward noise to invert, in [0, 1]. Default 0.8. */
  inpaintStrength?: number;
  /** DDIM steps of a full run. Default 50. */
  numInferenceSteps?: number;
  /** Classifier-free guidance of the inversion; ≤ 1 uses the text alone. Default 1 (diffusers: 7.5). */
  guidanceScale?: number;
  /** Fixed-point refinements of each inversion step, one model call each (see `InvertOptions.fixedPointIterations`). Default 0. */
  fixedPointIterations?: number;
}

/**
 * The options of {@link DiffEditPipeline.edit}. Without `mask` it infers one (source and target
 * texts needed); without `inversion` it inverts the image under the source text.
 * @example const options: DiffEditOptions = { image: "shirt.png", sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress", guidanceScale: 2 };
 */
export interface DiffEditOptions extends CallOptions, SourceTargetPrompts, MaskInferenceOptions {
  /** File, Buffer or (1 or B, C, H, W) tensor in [0, 1] with the model's image channels. */
  image: ImageSource;
  /** What to steer away from while decoding, one per target text. Default "". */
  negativePrompt?: string | string[];
  negativePromptEmbeds?: Tensor;
  /**
   * Where to edit: a {@link DiffEditMask}'s `mask`, or any file, Buffer or tensor ([h, w],
   * [1, h, w] or [1 or B, 1, h, w]) at latent or image resolution; ≥ 0.5 is edited.
   */
  mask?: ImageSource;
  /** From {@link DiffEditPipeline.invert} (or {@link invert}) of this image; its timesteps set the run. */
  inversion?: Inversion;
  /** How far toward noise to invert and edit, in [0, 1]. Default 0.8. */
  inpaintStrength?: number;
  /** DDIM steps of a full run. Default 50, or the inversion's. */
  numInferenceSteps?: number;
  /** Classifier-free guidance of the decoding; ≤ 1 disables it. Default: the model's (`model.defaults`), else 7.5. */
  guidanceScale?: number;
  guidanceRescale?: number;
  /**
   * Guide only the decoding steps whose timestep lies in [low, high]; the others run the target
   * text's pass alone. Default: the model's (`model.defaults`), else every step.
   */
  guidanceInterval?: [number, number];
  /** Classifier-free guidance of the inversion. Default 1. */
  inversionGuidanceScale?: number;
  /** Fixed-point refinements of each inversion step (see `InvertOptions.fixedPointIterations`). Default 0. */
  inversionFixedPointIterations?: number;
  /** DDIM η of the decoding. Default 0. */
  eta?: number;
  /** The decoding scheduler instead of `DDIMScheduler` on the model's config; its timesteps must continue the inversion's. */
  scheduler?: Scheduler;
}

/** What {@link DiffEditPipeline.edit} returns: the images and the mask it used. */
export interface DiffEditOutput extends PipelineOutput {
  /** (B, 1, h, w) float32 of 0 and 1: where the edit went. */
  mask: Tensor;
  /** (B, 1, H, W): `mask` at image resolution. */
  imageMask: Tensor;
}

/**
 * @example
 * const pipe = new DiffEditPipeline(loadModel("models/builtin"));
 * // One call: infer the mask, invert, decode.
 * const { images, imageMask } = await pipe.edit({ image: "shirt.png", sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress", guidanceScale: 2 });
 * // Or the three stages, as diffusers' generate_mask / invert / __call__:
 * const { mask } = await pipe.generateMask({ image: "shirt.png", sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress" });
 * const inversion = await pipe.invert({ image: "shirt.png", prompt: "a photo of a shirt" });
 * const out = await pipe.edit({ image: "shirt.png", targetPrompt: "a photo of a dress", mask, inversion });
 */
export class DiffEditPipeline {
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    this.model = model.requireTextToImage("DiffEditPipeline");
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): DiffEditPipeline {
    return new DiffEditPipeline(loadModel(dir, options));
  }

  /**
   * Infers where `targetPrompt` changes the image from `sourcePrompt` (stage 1).
   * @example const { mask, imageMask } = await pipe.generateMask({ image, sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress" });
   */
  async generateMask(options: DiffEditMaskOptions): Promise<DiffEditMask> {
    const who = "generateMask";
    checkObject(options, who);
    const o = checkMaskOptions(options);
    const steps = options.numInferenceSteps ?? this.model.defaults.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const pair = checkPair(options, who, true)!;
    checkBoolean(options.samplePosterior, "samplePosterior");
    throwIfAborted(options.signal);
    return this.maskChecked(options, o, steps, pair, progress(options.onProgress, 0, o.numMapsPerMask));
  }

  /**
   * DDIM-inverts the image under the source text up to `inpaintStrength` (stage 2).
   * @example const inversion = await pipe.invert({ image, prompt: "a photo of a shirt", numInferenceSteps: 50 });
   */
  async invert(options: DiffEditInvertOptions): Promise<Inversion> {
    checkObject(options, "invert");
    const o = checkInvertOptions(options, options.inpaintStrength ?? 0.8, "inpaintStrength");
    const total = inverseSteps(o.steps, o.strength);
    return invertChecked(this.model, { ...options, onProgress: progress(options.onProgress, 0, total, "invert") }, o, "invert");
  }

  /**
   * Edits the images toward `targetPrompt` inside the mask and keeps them outside it (stage 3),
   * inferring the mask and inverting first when they are not given.
   * @example const { images } = await pipe.edit({ image, sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress" });
   */
  async edit(options: DiffEditOptions): Promise<DiffEditOutput> {
    const who = "edit";
    const model = this.model;
    checkObject(options, who);
    const needsSource = options.mask === undefined || options.inversion === undefined;
    const pair = checkPair(options, who, needsSource);
    const target = checkSide(options, "target", who, { negativePrompt: options.negativePrompt, negativePromptEmbeds: options.negativePromptEmbeds });
    const inversion = options.inversion === undefined ? undefined : checkInversion(options.inversion, options);
    const inv = checkInvertOptions(
      {
        numInferenceSteps: options.numInferenceSteps ?? inversion?.numInferenceSteps ?? model.defaults.numInferenceSteps,
        guidanceScale: options.inversionGuidanceScale, samplePosterior: options.samplePosterior, fixedPointIterations: options.inversionFixedPointIterations,
      },
      options.inpaintStrength ?? 0.8,
      "inpaintStrength",
      "inversionFixedPointIterations",
    );
    const maskOptions = options.mask === undefined ? checkMaskOptions(options) : undefined;
    if (options.mask !== undefined && !isTensor(options.mask) && typeof options.mask !== "string" && !Buffer.isBuffer(options.mask)) {
      throw invalid("Tensor, file path or Buffer", "mask", options.mask);
    }
    const guider = callGuidance(model, options);
    throwIfAborted(options.signal);

    const decodeSteps = inversion ? inversion.timesteps.length : inverseSteps(inv.steps, inv.strength);
    const maskSteps = maskOptions ? maskOptions.numMapsPerMask : 0;
    const invertSteps = inversion ? 0 : decodeSteps;
    const total = maskSteps + invertSteps + decodeSteps;
    const scheduler = options.scheduler ? options.scheduler.clone() : model.newScheduler("DDIMScheduler");
    try {
      // Everything made here but the returned tensors is freed when the scope closes, also on abort.
      return await tidyAsync(async () => {
        const input = await model.readImages(options.image, { who: `${who} image` }); // (1 or B, C, H, W)
        const counts: Record<string, number> = { images: input.shape[0], "target prompts": target.count };
        if (pair) counts["source prompts"] = pair.source.count;
        if (inversion) counts["inverted latents"] = inversion.latents[0].shape[0];
        const batch = batchSize(who, counts);
        const images = expandBatch(input, batch); // (B, C, H, W)
        const [, , height, width] = images.shape;
        model.checkMemory(batch * (guider.enabled ? guider.conditions.length : 1), { height, width }, who);
        const latentSize = model.latentShape(1, { height, width }).slice(2);
        if (inversion && inversion.latents[0].shape.slice(2).join() !== latentSize.join()) {
          throw new Error(`${who}: the inversion's latents are ${inversion.latents[0].shape.slice(2).join("×")} but this image's are ${latentSize.join("×")}`);
        }

        // 1. The mask (B, 1, h, w), given or inferred.
        let mask: Tensor;
        if (options.mask !== undefined) {
          const given = await readEditMask(options.mask, [height, width], latentSize);
          batchSize(who, { images: batch, masks: given.shape[0] });
          mask = expandBatch(given, batch);
        } else {
          mask = (await this.maskChecked({ ...options, image: images }, maskOptions!, inv.steps, pair!, progress(options.onProgress, 0, total))).mask;
        }

        // 2. The inverted latents, given or computed under the source text.
        const inverted = inversion ?? await invertChecked(
          model,
          { image: images, ...pair!.source.options, signal: options.signal, generator: options.generator, onProgress: progress(options.onProgress, maskSteps, total, "invert") },
          inv,
          who,
        );

        // 3. Decode under the target text, keeping the inverted latents outside the mask.
        const n = inverted.timesteps.length;
        scheduler.setTimesteps(inverted.numInferenceSteps);
        const expected = [...inverted.timesteps].reverse();
        const startIndex = scheduler.timesteps.length - n;
        if (scheduler.timesteps.slice(startIndex).join() !== expected.join()) {
          throw new Error(`${who}: ${scheduler.className}'s last ${n} timesteps [${scheduler.timesteps.slice(startIndex).join(", ")}] are not the inversion's [${expected.join(", ")}] reversed; use DDIMScheduler on the model's config`);
        }
        const imageMask = interpolate(mask, { size: [height, width], mode: "nearest" }); // (B, 1, H, W)
        if (n === 0) return { images: images.clone(), mask, imageMask };
        scheduler.setBeginIndex(startIndex);
        const editMask = mask.ge(0.5).to({ device: model.device }); // (B, 1, h, w) bool
        const start = inverted.latents[n].expand([batch, ...inverted.latents[n].shape.slice(1)]).contiguous(); // (B, c, h, w), a handle denoise may free
        const context = await promptContext(model, target.options, promptsFor(target.prompts, batch), guider.enabled); // (copies·B, T, D)
        const final = await denoise({
          model, scheduler, guider: guider.enabled ? guider : null, latents: start, context, timesteps: expected,
          // After step i the latents are at the next lower level, which inverted.latents[n − 1 − i] holds (the clean encoding last).
          afterStep: (stepped, i) => where(editMask, stepped, inverted.latents[n - 1 - i]),
          signal: options.signal, generator: options.generator, eta: options.eta,
          onProgress: progress(options.onProgress, maskSteps + invertSteps, total, "denoise"),
        });
        // denoise's result is exempt from tidy scopes (kept): free it by hand.
        const decoded = await model.latentsToImages(final).finally(() => final.dispose());
        const generated = decoded.device === images.device ? decoded : decoded.to({ device: images.device }); // (B, C, H, W)
        // Pixel-space models: the input's own pixels outside the mask, exactly.
        const out = model.vae ? generated : where(imageMask.ge(0.5).to({ device: images.device }), generated, images);
        return { images: out, mask, imageMask };
      });
    } finally {
      scheduler.dispose();
    }
  }

  /** Stage 1 once its options are checked. */
  private async maskChecked(
    options: { image: ImageSource; signal?: AbortSignal; generator?: Generator; samplePosterior?: boolean },
    o: Required<MaskInferenceOptions>,
    steps: number,
    pair: CheckedPair,
    report: (info: ProgressInfo) => void,
  ): Promise<DiffEditMask> {
    const model = this.model;
    const who = "generateMask";
    const scheduler = model.newScheduler("DDIMScheduler");
    scheduler.setTimesteps(steps);
    const { timesteps } = timestepsForStrength(scheduler.timesteps, steps, o.maskEncodeStrength, scheduler.order);
    if (timesteps.length === 0) {
      throw new Error(`${who}: maskEncodeStrength ${o.maskEncodeStrength} of ${steps} steps reaches no timestep; raise it or numInferenceSteps`);
    }
    const t = timesteps[0];
    try {
      return await tidyAsync(async () => {
        const input = await model.readImages(options.image, { who: `${who} image` }); // (1 or B, C, H, W)
        const batch = batchSize(who, { images: input.shape[0], "source prompts": pair.source.count, "target prompts": pair.target.count });
        const images = expandBatch(input, batch); // (B, C, H, W)
        model.checkMemory(2 * batch, { height: images.shape[2], width: images.shape[3] }, who);
        const clean = await encodeClean(model, images, { samplePosterior: options.samplePosterior, generator: options.generator }); // (B, c, h, w)
        const source = await promptContext(model, pair.source.options, promptsFor(pair.source.prompts, batch), false); // (B, T, D)
        const targetContext = await promptContext(model, pair.target.options, promptsFor(pair.target.prompts, batch), false); // (B, T, D)
        const context = cat([source, targetContext], 0); // (2B, T, D)
        const maps: Tensor[] = [];
        for (let draw = 0; draw < o.numMapsPerMask; draw++) {
          throwIfAborted(options.signal);
          const noisy = tidy(() => {
            const noise = randn(clean.shape, { generator: options.generator, device: options.generator?.device, dtype: clean.dtype }); // (B, c, h, w)
            return scheduler.addNoise(clean, noise.device === clean.device ? noise : noise.to({ device: clean.device }), [t]);
          });
          const difference = await tidyAsync(async () => {
            const input = scheduler.scaleModelInput(cat([noisy, noisy], 0), t); // (2B, c, h, w)
            const prediction = await noGrad(() => model.predict({ sample: input, timestep: t, encoderHiddenStates: context }));
            const [fromSource, fromTarget] = prediction.chunk(2, 0);
            return fromTarget.sub(fromSource).abs().float().mean(1, true); // (B, 1, h, w): mean over channels
          });
          maps.push(difference);
          report({ step: draw + 1, total: o.numMapsPerMask, timestep: t, latents: noisy });
        }
        // Diffusers' thresholding, per image: clamp to ratio × mean, divide by it, keep > 0.5.
        const map = stack(maps, 0).mean(0); // (B, 1, h, w)
        const magnitude = map.reshape([batch, -1]).mean(1).reshape([batch, 1, 1, 1]).mul(o.maskThresholdingRatio).clamp(1e-30); // (B, 1, 1, 1)
        const normalised = map.div(magnitude).clamp(0, 1); // (B, 1, h, w)
        const mask = normalised.gt(0.5).float(); // (B, 1, h, w)
        const imageMask = interpolate(mask, { size: images.shape.slice(2), mode: "nearest" }); // (B, 1, H, W)
        return { mask, imageMask, map: normalised };
      });
    } finally {
      scheduler.dispose();
    }
  }
}

/** One side's prompt options, checked, with the options promptContext takes. */
interface CheckedSide {
  options: PromptOptions;
  prompts: Prompts;
  count: number;
}

interface CheckedPair {
  source: CheckedSide;
  target: CheckedSide;
}

function checkObject(options: unknown, who: string): void {
  if (options === null || typeof options !== "object") throw invalid("object of options", `${who} options`, options);
}

function checkBoolean(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== "boolean") throw invalid("boolean", name, value);
}

/** `sourcePrompt`/`sourcePromptEmbeds` or the target's, named as the caller wrote them. */
function checkSide(o: SourceTargetPrompts, side: "source" | "target", who: string, extra: PromptOptions = {}): CheckedSide {
  const text = o[`${side}Prompt`];
  const embeds = o[`${side}PromptEmbeds`];
  if (text !== undefined && embeds !== undefined) throw new Error(`${who}: give ${side}Prompt or ${side}PromptEmbeds, not both`);
  if (text === undefined && embeds === undefined) throw new Error(`${who}: ${side}Prompt (or ${side}PromptEmbeds) is required`);
  if (text !== undefined) {
    const list = typeof text === "string" ? [text] : text;
    if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === "string")) throw invalid("string or non-empty array of strings", `${side}Prompt`, text);
  } else {
    assertTensor(embeds, `${side}PromptEmbeds`);
    if (embeds.ndim !== 3) throw new Error(`${side}PromptEmbeds: expected text embeddings (B, T, D) but received shape [${embeds.shape.join(", ")}]`);
  }
  const options: PromptOptions = { prompt: text, promptEmbeds: embeds, clipSkip: (o as CallOptions).clipSkip, ...extra };
  const prompts = checkPrompts(options, who);
  return { options, prompts, count: prompts.count };
}

/** Both sides, checked; undefined when not `required`. */
function checkPair(o: SourceTargetPrompts & CallOptions, who: string, required: boolean): CheckedPair | undefined {
  if (!required) return undefined;
  return { source: checkSide(o, "source", who), target: checkSide(o, "target", who) };
}

function checkMaskOptions(o: MaskInferenceOptions): Required<MaskInferenceOptions> {
  const maskEncodeStrength = o.maskEncodeStrength ?? 0.5;
  assertNumber(maskEncodeStrength, "maskEncodeStrength");
  if (!(maskEncodeStrength > 0 && maskEncodeStrength <= 1)) throw invalid("number in (0, 1]", "maskEncodeStrength", maskEncodeStrength);
  const numMapsPerMask = o.numMapsPerMask ?? 10;
  assertInteger(numMapsPerMask, "numMapsPerMask", 1);
  const maskThresholdingRatio = o.maskThresholdingRatio ?? 3;
  assertNumber(maskThresholdingRatio, "maskThresholdingRatio");
  if (!(maskThresholdingRatio > 0) || !Number.isFinite(maskThresholdingRatio)) throw invalid("positive number", "maskThresholdingRatio", maskThresholdingRatio);
  return { maskEncodeStrength, numMapsPerMask, maskThresholdingRatio };
}

/** A given inversion: its shape and agreement with the call's own step count and strength. */
function checkInversion(inversion: Inversion, o: DiffEditOptions): Inversion {
  const ok = inversion !== null && typeof inversion === "object" && Array.isArray(inversion.latents) && Array.isArray(inversion.timesteps)
    && inversion.latents.length === inversion.timesteps.length + 1 && inversion.latents.every(isTensor) && Number.isInteger(inversion.numInferenceSteps);
  if (!ok) throw invalid("Inversion (from invert)", "inversion", inversion);
  if (o.numInferenceSteps !== undefined && o.numInferenceSteps !== inversion.numInferenceSteps) {
    throw new Error(`edit: numInferenceSteps ${o.numInferenceSteps} disagrees with the inversion's ${inversion.numInferenceSteps}`);
  }
  if (o.inpaintStrength !== undefined && inverseSteps(inversion.numInferenceSteps, o.inpaintStrength) !== inversion.timesteps.length) {
    throw new Error(`edit: inpaintStrength ${o.inpaintStrength} disagrees with the inversion's ${inversion.timesteps.length} of ${inversion.numInferenceSteps} steps`);
  }
  return inversion;
}

/** The steps an inversion (and its decoding) of `strength` runs. */
function inverseSteps(steps: number, strength: number): number {
  return Math.min(Math.trunc(steps * strength), steps);
}

/** A stage's reports, renumbered into the whole call's count. */
function progress(onProgress: ((info: DiffEditProgress) => void) | undefined, offset: number, total: number, stage: DiffEditStage = "mask") {
  return (info: ProgressInfo) => onProgress?.({ ...info, step: offset + info.step, total, stage });
}

/**
 * Reads a DiffEdit mask as (B, 1, h, w) float32 of 0 and 1 at latent resolution: ≥ 0.5 is
 * edited. Files and Buffers are read as grayscale; a tensor may be [h, w], [1, h, w] or
 * [B, 1, h, w]. Image-resolution masks are downsampled (nearest), so a mask written from a
 * {@link DiffEditMask}'s `imageMask` reads back as its `mask`.
 * @example const mask = await readEditMask("mask.png", [32, 32], [32, 32]); // (1, 1, 32, 32)
 */
export async function readEditMask(source: ImageSource, imageSize: number[], latentSize: number[]): Promise<Tensor> {
  const raw = typeof source === "string" || Buffer.isBuffer(source) ? await toImageTensor(source, { channels: 1 }) : source;
  try {
    if (!isTensor(raw)) throw invalid("Tensor, file path or Buffer", "mask", raw);
    if (raw.ndim < 2 || raw.ndim > 4 || (raw.ndim >= 3 && raw.shape[raw.ndim - 3] !== 1)) {
      throw new Error(`edit mask: expected a tensor [h, w], [1, h, w] or [B, 1, h, w] but received shape [${raw.shape.join(", ")}]`);
    }
    const [h, w] = raw.shape.slice(-2);
    const atLatent = h === latentSize[0] && w === latentSize[1];
    const atImage = h === imageSize[0] && w === imageSize[1];
    if (!atLatent && !atImage) {
      throw new Error(`edit mask: expected ${latentSize.join("×")} (latent) or ${imageSize.join("×")} (image) but the mask is ${h}×${w}`);
    }
    return tidy(() => {
      const m = raw.reshape([raw.ndim === 4 ? raw.shape[0] : 1, 1, h, w]).float(); // (B, 1, h or H, w or W)
      const resized = atLatent ? m : interpolate(m, { size: latentSize, mode: "nearest" });
      return resized.ge(0.5).float(); // (B, 1, h, w)
    });
  } finally {
    if (raw !== source) (raw as Tensor).dispose();
  }
}
