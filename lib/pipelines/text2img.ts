/**
 * Text-to-image: latent (Stable Diffusion) or pixel-space U-Net models with classifier-free
 * guidance and any scheduler.
 */
import { ClassifierFreeGuidance } from "../guidance";
import { assertInteger, invalid } from "../errors";
import { loadModel, type ModelLoadOptions } from "../models";
import type { Scheduler } from "../schedulers";
import { randn, tidy, type Generator, type Tensor } from "../tensor";
import { checkPrompts, promptContext, type PromptOptions } from "./prompts";
import { defaultImageSize, denoiseToImages, throwIfAborted, vaeScaleFactor, type LoopOptions, type TextToImageComponents } from "./common";

export interface GenerateOptions extends LoopOptions, PromptOptions {
  /** Classifier-free guidance scale; ≤ 1 disables guidance. Default 7.5. */
  guidanceScale?: number;
  guidanceRescale?: number;
  numInferenceSteps?: number;
  height?: number;
  width?: number;
  /** Replaces the model's scheduler for this call. */
  scheduler?: Scheduler;
  /** Starting latents instead of drawing them (B, C, h, w). */
  latents?: Tensor;
}

export interface PipelineOutput {
  /** (B, C, H, W) float32 in [0, 1]. */
  images: Tensor;
}

/**
 * @example
 * const pipe = Text2ImagePipeline.fromPretrained("models/sd-1.5");
 * const { images } = await pipe.generate({ prompt: "a photo of a sneaker", generator: new Generator(0) });
 */
export class Text2ImagePipeline {
  constructor(readonly components: TextToImageComponents) {
    for (const key of ["unet", "scheduler", "textEncoder", "tokenizer"] as const) {
      if (!components[key]) throw new Error(`Text2ImagePipeline: the model has no ${key}`);
    }
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): Text2ImagePipeline {
    const model = loadModel(dir, options);
    return new Text2ImagePipeline(model as TextToImageComponents);
  }

  get sampleSize(): number {
    return defaultImageSize(this.components);
  }

  async generate(options: GenerateOptions): Promise<PipelineOutput> {
    const c = this.components;
    const prompts = checkPrompts(options, "generate");
    const steps = options.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const height = options.height ?? this.sampleSize;
    const width = options.width ?? this.sampleSize;
    const factor = vaeScaleFactor(c.vae);
    for (const [name, value] of [["height", height], ["width", width]] as const) {
      assertInteger(value, name, 1);
      if (value % factor !== 0) throw invalid(`multiple of ${factor}`, name, value);
    }
    const guider = new ClassifierFreeGuidance(options.guidanceScale ?? 7.5, options.guidanceRescale ?? 0);
    const scheduler = options.scheduler ?? c.scheduler;
    throwIfAborted(options.signal);

    const context = await promptContext(c, options, prompts, guider.enabled);
    scheduler.setTimesteps(steps);
    const shape = [prompts.count * prompts.perPrompt, c.unet.config.in_channels, height / factor, width / factor];
    const latents = options.latents ? options.latents.clone() : drawLatents(shape, scheduler.initNoiseSigma, c.unet.device, options.generator);
    const images = await denoiseToImages(c.vae, { ...options, unet: c.unet, scheduler, guider: guider.enabled ? guider : null, latents, context, timesteps: scheduler.timesteps });
    return { images };
  }
}

/** Noise drawn on the generator's device (CPU by default, as diffusers does), then moved to the model's. */
function drawLatents(shape: number[], initNoiseSigma: number, device: string, generator?: Generator): Tensor {
  return tidy(() => randn(shape, { generator, device: generator?.device }).mul(initNoiseSigma).to({ device })); // (B, C, h, w)
}
