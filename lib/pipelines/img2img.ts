/**
 * SDEdit (Meng et al., "SDEdit: Guided Image Synthesis and Editing with Stochastic
 * Differential Equations", 2022): noise an input image — or a user's stroke painting — to
 * an intermediate time set by `strength`, then denoise it with the prompt. Strength 0
 * returns the input; strength 1 is text-to-image from pure noise.
 */
import { ClassifierFreeGuidance } from "../guidance";
import { assertInteger, assertNumber, invalid } from "../errors";
import { toImageTensor, type ImageSource } from "../image";
import { op } from "../dispatch";
import { loadModel, type ModelLoadOptions } from "../models";
import { randnLike, tidy, type Tensor } from "../tensor";
import { checkPrompts, promptContext } from "./prompts";
import { denoiseToImages, imagesToLatents, throwIfAborted, vaeScaleFactor, type TextToImageComponents } from "./common";
import type { GenerateOptions, PipelineOutput } from "./text2img";

export interface EditOptions extends Omit<GenerateOptions, "height" | "width" | "latents"> {
  /** File, Buffer or (B, C, H, W) tensor in [0, 1]; resized to a multiple of the VAE factor. */
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
  constructor(readonly components: TextToImageComponents) {}

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): Img2ImagePipeline {
    return new Img2ImagePipeline(loadModel(dir, options) as TextToImageComponents);
  }

  async edit(options: EditOptions): Promise<PipelineOutput> {
    const c = this.components;
    const strength = options.strength ?? 0.8;
    assertNumber(strength, "strength");
    if (strength < 0 || strength > 1) throw invalid("number in [0, 1]", "strength", strength);
    const steps = options.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const prompts = checkPrompts(options, "edit");
    const { count, perPrompt } = prompts;
    throwIfAborted(options.signal);

    const input = await loadEditImage(options.image, vaeScaleFactor(c.vae));
    try {
      if (input.shape[0] !== 1 && input.shape[0] !== count) throw new Error(`edit: ${input.shape[0]} images for ${count} prompts`);
      const batch = count * perPrompt;
      // One image for all prompts, or one per prompt, each repeated for its images.
      const images = tidy(() => (input.shape[0] === 1 ? input.expand([batch, ...input.shape.slice(1)]).contiguous() : (op("aten::repeat_interleave.self_int", input, perPrompt, 0) as Tensor))); // (B, C, H, W)
      if (strength === 0) return { images };
      const scheduler = options.scheduler ?? c.scheduler;
      scheduler.setTimesteps(steps);
      const { timesteps, startIndex } = timestepsForStrength(scheduler.timesteps, steps, strength, scheduler.order);
      if (timesteps.length === 0) return { images };
      const clean = await imagesToLatents(c.vae, images, options.generator);
      images.dispose();
      const latents = tidy(() => {
        const noise = randnLike(clean, { generator: options.generator });
        // Strength 1 starts from pure noise, as text-to-image does.
        return strength === 1 ? noise.mul(scheduler.initNoiseSigma) : scheduler.addNoise(clean, noise, [timesteps[0]]);
      });
      clean.dispose();
      scheduler.setBeginIndex(startIndex);
      const guider = new ClassifierFreeGuidance(options.guidanceScale ?? 7.5, options.guidanceRescale ?? 0);
      const context = await promptContext(c, options, prompts, guider.enabled);
      return { images: await denoiseToImages(c.vae, { ...options, unet: c.unet, scheduler, guider: guider.enabled ? guider : null, latents, context, timesteps }) };
    } finally {
      input.dispose();
    }
  }
}

/** The edit image as (B, C, H, W) in [0, 1] with H and W multiples of `factor`. */
export async function loadEditImage(source: ImageSource, factor: number): Promise<Tensor> {
  const image = await toImageTensor(source);
  const [, , height, width] = image.shape;
  if (height % factor !== 0 || width % factor !== 0) {
    image.dispose();
    throw new Error(`edit image: height and width must be multiples of ${factor} but the image is ${height}×${width}`);
  }
  return image;
}
