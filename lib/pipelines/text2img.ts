/**
 * Text-to-image: latent (Stable Diffusion) or pixel-space U-Net models with classifier-free
 * guidance and any scheduler.
 */
import { assertInteger } from "../errors";
import { loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import type { Scheduler } from "../schedulers";
import { randn, tidy, type Generator, type Tensor } from "../tensor";
import { checkPrompts, promptContext, type PromptOptions } from "./prompts";
import { callGuidance, callScheduler, denoiseToImages, throwIfAborted, type LoopOptions } from "./common";

export interface GenerateOptions extends LoopOptions, PromptOptions {
  /** Classifier-free guidance scale; ≤ 1 disables guidance. Default: the model's (`model.defaults`), else 7.5. */
  guidanceScale?: number;
  guidanceRescale?: number;
  /**
   * Guide only the steps whose timestep lies in [low, high] (0–1000 for the usual 1,000 training
   * steps); the others run the conditional pass alone. Default: the model's (`model.defaults`), else every step.
   */
  guidanceInterval?: [number, number];
  /** Denoising steps. Default: the model's (`model.defaults`), else 50. */
  numInferenceSteps?: number;
  height?: number;
  width?: number;
  /** The scheduler (class and config) for this call instead of the model's; the call steps a copy. */
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
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    this.model = model.requireTextToImage("Text2ImagePipeline");
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): Text2ImagePipeline {
    return new Text2ImagePipeline(loadModel(dir, options));
  }

  /** The default image side in pixels (the model's sample size). */
  get sampleSize(): number {
    return this.model.sampleSize;
  }

  async generate(options: GenerateOptions): Promise<PipelineOutput> {
    const model = this.model;
    const prompts = checkPrompts(options, "generate");
    const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const shape = model.latentShape(prompts.count * prompts.perPrompt, { height: options.height, width: options.width }); // (B, C, h, w)
    const guider = callGuidance(model, options);
    model.checkMemory(shape[0] * (guider.enabled ? guider.conditions.length : 1), { height: options.height, width: options.width }, "generate");
    throwIfAborted(options.signal);

    const scheduler = callScheduler(model, options.scheduler);
    try {
      const context = await promptContext(model, options, prompts, guider.enabled);
      scheduler.setTimesteps(steps);
      const latents = options.latents ? options.latents.clone() : drawLatents(shape, scheduler.initNoiseSigma, model.device, options.generator);
      const images = await denoiseToImages({ ...options, model, scheduler, guider: guider.enabled ? guider : null, latents, context, timesteps: scheduler.timesteps });
      return { images };
    } finally {
      scheduler.dispose();
    }
  }
}

/**
 * Noise drawn on the generator's device (CPU by default, as diffusers does), then moved to the model's.
 * @example const latents = drawLatents(model.latentShape(1), scheduler.initNoiseSigma, model.device, new Generator(0));
 */
export function drawLatents(shape: number[], initNoiseSigma: number, device: string, generator?: Generator): Tensor {
  return tidy(() => randn(shape, { generator, device: generator?.device }).mul(initNoiseSigma).to({ device })); // (B, C, h, w)
}
