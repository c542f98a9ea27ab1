/**
 * InstructPix2Pix (Brooks et al., "InstructPix2Pix: Learning to Follow Image Editing
 * Instructions", CVPR 2023): a text-to-image U-Net whose input also takes the encoded input
 * image (its `conv_in` widened, the new channels' weights zero-initialized so training starts
 * from the text-to-image model), edited along an instruction with dual classifier-free
 * guidance over image and text (the paper's Eq. 3):
 *
 *   ε̃ = ε(∅, ∅) + s_I · (ε(I, ∅) − ε(∅, ∅)) + s_T · (ε(I, T) − ε(I, ∅))
 *
 * — the three predictions in one batched U-Net call, as diffusers'
 * StableDiffusionInstructPix2PixPipeline does: contexts [T, ∅, ∅] with image conditioning
 * [I, I, 0]. As there, the image conditioning of latent models is the VAE posterior's mode,
 * unscaled (`timbrooks/instruct-pix2pix` was trained so); pixel models take the image in
 * [-1, 1].
 */
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, invalid } from "../errors";
import { DualGuidance } from "../guidance";
import type { ImageSource } from "../image";
import { UNet2DConditionModel, loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import { imageCondition, imageConditionChannels, isImageConditioned } from "../training/instruct";
import { independentCopy } from "../training/trainer";
import { cat, randn, tidy, tidyAsync, zeros, zerosLike, type Tensor } from "../tensor";
import { callScheduler, denoiseToImages, throwIfAborted, type LoopOptions } from "./common";
import type { PipelineOutput } from "./text2img";

export interface InstructOptions extends LoopOptions {
  /** The image to edit: a file, Buffer or (1 or B, C, H, W) tensor in [0, 1]. */
  image: ImageSource;
  /** What to do, e.g. "turn it into a dress"; one, or one per image. */
  instruction: string | string[];
  /** What to steer away from (replaces the empty text of the unconditional terms). */
  negativePrompt?: string | string[];
  /** s_T: how strongly to follow the instruction. Default the model's guidance default, else 7.5. */
  guidanceScale?: number;
  /** s_I: how strongly to stay with the input image. Default 1.5 (the paper's and diffusers'). */
  imageGuidanceScale?: number;
  /**
   * Guide only the steps whose timestep lies in [low, high]; the others run the image+text pass
   * alone. Default: the model's (`model.defaults`), else every step.
   */
  guidanceInterval?: [number, number];
  numInferenceSteps?: number;
  /** Edits drawn for each (image, instruction). Default 1. */
  numImagesPerPrompt?: number;
  /** Replaces the model's scheduler for this call (the call steps a copy). */
  scheduler?: import("../schedulers").Scheduler;
}

/**
 * A model whose U-Net takes `extraChannels` more input channels: a copy of its `conv_in` with
 * the new channels' weights zero, so for any extra input the widened model predicts exactly
 * what the original predicts (InstructPix2Pix's initialization). The original model is untouched.
 * @example const ip2p = widenInputChannels(loadModel("models/builtin"), 1); // 1 → 2 input channels
 */
export function widenInputChannels(model: DiffusionModel, extraChannels: number): TextToImageModel {
  assertInteger(extraChannels, "widenInputChannels extraChannels", 1);
  const t2i = model.requireTextToImage("widenInputChannels");
  const module = independentCopy(t2i.unet.module, () => true);
  const params = module.namedParameters() as Record<string, Tensor>;
  const weight = params["conv_in.weight"];
  try {
    if (!weight) throw new Error(`widenInputChannels: the U-Net has no conv_in.weight (parameters: ${Object.keys(params).slice(0, 5).join(", ")}, ...)`);
    const widened = noGrad(() =>
      tidy(() => {
        const [out, , kh, kw] = weight.shape; // (C_out, C_in, k, k)
        return cat([weight, zeros([out, extraChannels, kh, kw], { dtype: weight.dtype, device: weight.device })], 1).requiresGrad_(true); // (C_out, C_in + extra, k, k)
      }),
    );
    module.setParameter("conv_in.weight", widened);
    widened.dispose();
  } catch (error) {
    module.dispose();
    throw error;
  } finally {
    for (const p of Object.values(params)) p.dispose();
  }
  const config = { ...(t2i.unet.config as Record<string, unknown>), in_channels: t2i.unet.config.in_channels + extraChannels };
  const unet = new UNet2DConditionModel(module, config, t2i.unet.meta);
  return model.with({ unet }).requireTextToImage("widenInputChannels");
}

function textList(value: unknown, name: string): string[] {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === "string")) throw invalid("string or non-empty array of strings", name, value);
  return list;
}

/**
 * @example
 * const pipe = InstructPix2PixPipeline.fromPretrained("models/instruct-pix2pix");
 * const { images } = await pipe.edit({ image: "shirt.png", instruction: "turn it into a dress", imageGuidanceScale: 1.5, guidanceScale: 7.5 });
 */
export class InstructPix2PixPipeline {
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    const t2i = model.requireTextToImage("InstructPix2PixPipeline");
    const latent = t2i.latentChannels;
    const inChannels = t2i.unet.config.in_channels;
    const conditioning = imageConditionChannels(t2i);
    if (!isImageConditioned(t2i)) {
      throw new Error(`InstructPix2PixPipeline: the U-Net takes ${inChannels} input channels; an image-conditioned model takes ${latent + conditioning} (${latent} noisy + ${conditioning} image)`);
    }
    this.model = t2i;
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): InstructPix2PixPipeline {
    return new InstructPix2PixPipeline(loadModel(dir, options));
  }

  /** The image conditioning of images in [0, 1] (see imageCondition). */
  async imageConditioning(images: Tensor): Promise<Tensor> {
    const signed = noGrad(() => tidy(() => images.mul(2).sub(1)));
    return imageCondition(this.model, signed).finally(() => signed.dispose());
  }

  /**
   * Edits the image(s) along the instruction(s); returns (B, C, H, W) in [0, 1].
   * @example const { images } = await pipe.edit({ image, instruction: "make it a bag", generator: new Generator(0) });
   */
  async edit(options: InstructOptions): Promise<PipelineOutput> {
    const model = this.model;
    if (options === null || typeof options !== "object") throw invalid("options object", "InstructPix2PixPipeline.edit options", options);
    const instructions = textList(options.instruction, "instruction");
    const negatives = options.negativePrompt === undefined ? instructions.map(() => "") : textList(options.negativePrompt, "negativePrompt");
    if (negatives.length !== instructions.length) throw new Error(`instruct: ${negatives.length} negative prompts for ${instructions.length} instructions`);
    const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const textScale = options.guidanceScale ?? model.defaults.guidanceScale ?? 7.5;
    const imageScale = options.imageGuidanceScale ?? 1.5;
    assertNumber(textScale, "guidanceScale");
    assertNumber(imageScale, "imageGuidanceScale");
    const guider = new DualGuidance({ textScale, imageScale, interval: options.guidanceInterval ?? model.defaults.guidanceInterval });
    throwIfAborted(options.signal);

    const scheduler = callScheduler(model, options.scheduler);
    try {
      return await tidyAsync(async () => {
        const input = await model.readImages(options.image, { who: "instruct image" }); // (1 or B, C, H, W)
        const batch = Math.max(input.shape[0], instructions.length);
        if ((input.shape[0] !== 1 && input.shape[0] !== batch) || (instructions.length !== 1 && instructions.length !== batch)) {
          throw new Error(`instruct: ${input.shape[0]} images for ${instructions.length} instructions (give 1 or as many of each)`);
        }
        const [, , height, width] = input.shape;
        const perPrompt = options.numImagesPerPrompt ?? 1;
        assertInteger(perPrompt, "numImagesPerPrompt", 1);
        model.checkMemory(3 * batch * perPrompt, { height, width }, "instruct");
        const pairs = input.shape[0] === batch ? input : input.expand([batch, ...input.shape.slice(1)]); // (B0, C, H, W)
        const images = pairs.repeatInterleave(perPrompt, 0).contiguous(); // (B, C, H, W), B = B0 · perPrompt
        const condition = await this.imageConditioning(images); // (B, c, h, w)
        const extraInput = cat([condition, condition, zerosLike(condition)], 0); // (3B, c, h, w): [I, I, 0]
        const repeat = (texts: string[]) => Array.from({ length: batch * perPrompt }, (_, i) => texts[texts.length === 1 ? 0 : Math.floor(i / perPrompt)]);
        const text = await model.encodePrompt(repeat(instructions)); // (B, T, D)
        const negative = await model.encodePrompt(repeat(negatives));
        const context = cat([text, negative, negative], 0); // (3B, T, D): [T, ∅, ∅]
        scheduler.setTimesteps(steps);
        const shape = model.latentShape(batch * perPrompt, { height, width });
        const latents = randn(shape, { generator: options.generator, device: options.generator?.device }).mul(scheduler.initNoiseSigma).to({ device: model.device }); // (B, c, h, w)
        const output = await denoiseToImages({
          model, scheduler, guider, latents, context, extraInput, timesteps: scheduler.timesteps,
          signal: options.signal, onProgress: options.onProgress, generator: options.generator, eta: options.eta,
        });
        return { images: output };
      });
    } finally {
      scheduler.dispose();
    }
  }
}
