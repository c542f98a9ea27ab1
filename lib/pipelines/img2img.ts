/**
 * SDEdit (Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic
 * Differential Equations", 2022): noise an input image — or a user's stroke painting — to
 * an intermediate time set by `strength`, then denoise it with the prompt. Strength 0
 * returns the input; strength 1 is text-to-image from pure noise.
 */
import { assertInteger, assertNumber, invalid } from "../errors";
import type { ImageSource } from "../image";
import { loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import { randnLike, tidyAsync } from "../tensor";
import { checkPrompts, promptContext } from "./prompts";
import { callGuidance, callScheduler, denoiseToImages, throwIfAborted } from "./common";
import type { GenerateOptions, PipelineOutput } from "./text2img";

export interface EditOptions extends Omit<GenerateOptions, "height" | "width" | "latents"> {
  /** File, Buffer or (B, C, H, W) tensor in [0, 1] with the model's image channels; H and W multiples of the VAE factor. */
  image: ImageSource;
  /** How far toward noise to go, in [0, 1]. Default 0.8. */
  strength?: number;
}

/** The timesteps an edit of `strength` runs, as diffusers' img2img `get_timesteps`. */
export function timestepsForStrength(timesteps: number[], numInferenceSteps: number, strength: number, order = 1): { timesteps: number[]; startIndex: number } {
  const initTimestep = Math.min(Math.trunc(numInferenceSteps * strength), numInferenceSteps);
  const tStart = Math.max(numInferenceSteps - initTimestep, 0);
  return { timesteps: timesteps.slice(tStart * order), startIndex: tStart * order };
}

/**
 * @example
 * const pipe = Img2ImagePipeline.fromPretrained(dir);
 * const { images } = await pipe.edit({ image: "strokes.png", prompt: "a photo of a dress", strength: 0.7 });
 */
export class Img2ImagePipeline {
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    this.model = model.requireTextToImage("Img2ImagePipeline");
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): Img2ImagePipeline {
    return new Img2ImagePipeline(loadModel(dir, options));
  }

  async edit(options: EditOptions): Promise<PipelineOutput> {
    const model = this.model;
    const strength = options.strength ?? 0.8;
    assertNumber(strength, "strength");
    if (strength < 0 || strength > 1) throw invalid("number in [0, 1]", "strength", strength);
    const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const prompts = checkPrompts(options, "edit");
    const { count, perPrompt } = prompts;
    throwIfAborted(options.signal);

    const guider = callGuidance(model, options);
    const scheduler = callScheduler(model, options.scheduler);
    try {
      // Everything made here but the returned images is freed when the scope closes, also on abort.
      return await tidyAsync(async () => {
        const input = await model.readImages(options.image, { who: "edit image" }); // (1 or B, C, H, W)
        if (input.shape[0] !== 1 && input.shape[0] !== count) throw new Error(`edit: ${input.shape[0]} images for ${count} prompts`);
        // One image for all prompts, or one per prompt, each repeated for its images.
        const [, , height, width] = input.shape;
        model.checkMemory(count * perPrompt * (guider.enabled ? guider.conditions.length : 1), { height, width }, "edit");
        const images = input.shape[0] === 1 ? input.expand([count * perPrompt, ...input.shape.slice(1)]).contiguous() : input.repeatInterleave(perPrompt, 0); // (B, C, H, W)
        if (strength === 0) return { images };
        scheduler.setTimesteps(steps);
        const { timesteps, startIndex } = timestepsForStrength(scheduler.timesteps, steps, strength, scheduler.order);
        if (timesteps.length === 0) return { images };
        const clean = await model.imagesToLatents(images, options.generator); // (B, c, h, w)
        const noise = randnLike(clean, { generator: options.generator });
        // Strength 1 starts from pure noise, as text-to-image does.
        const latents = strength === 1 ? noise.mul(scheduler.initNoiseSigma) : scheduler.addNoise(clean, noise, [timesteps[0]]);
        scheduler.setBeginIndex(startIndex);
        const context = await promptContext(model, options, prompts, guider.enabled);
        return { images: await denoiseToImages({ ...options, model, scheduler, guider: guider.enabled ? guider : null, latents, context, timesteps }) };
      });
    } finally {
      scheduler.dispose();
    }
  }
}
