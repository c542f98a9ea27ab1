/**
 * Inpainting: repaint where the mask is white (≥ 0.5), keep where it is black. Two kinds of
 * denoiser are accepted:
 *
 * - a plain one (UNet `in_channels` = latent channels, any text-to-image model): the known
 *   region is blended back after every step, as RePaint does (Lugmayr et al., "RePaint:
 *   Inpainting using Denoising Diffusion Probabilistic Models", 2022, without its
 *   resampling jumps) and as diffusers' StableDiffusionInpaintPipeline does for 4-channel
 *   UNets: x ← m·x + (1−m)·q(x₀ | t_next), and the clean x₀ after the last step;
 * - an inpainting UNet (`in_channels` = 2·latent + 1, e.g. SD-inpainting's 9): the mask and
 *   the masked image's latents are concatenated to its input every step; no blending.
 *
 * Latent models see the mask resized (nearest) to the latent grid, so the VAE round trip
 * blurs the known region a little; `pasteBack` (default true) copies the input's known
 * pixels over the decoded result. Pixel-space models always paste back, so there the known
 * region equals the input exactly.
 */
import { assertInteger, assertNumber, invalid } from "../errors";
import { toImageTensor, type ImageSource } from "../image";
import { interpolate } from "../functional";
import { loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import { cat, randn, tidy, tidyAsync, where, type Tensor } from "../tensor";
import { checkPrompts, promptContext } from "./prompts";
import { callGuidance, callScheduler, denoise, throwIfAborted } from "./common";
import { timestepsForStrength, type EditOptions } from "./img2img";
import type { PipelineOutput } from "./text2img";

/**
 * The options of {@link InpaintPipeline.inpaint}: those of an SDEdit edit plus the mask.
 * @example const options: InpaintOptions = { image: "room.png", mask: "mask.png", prompt: "a red sofa", numInferenceSteps: 30 };
 */
export interface InpaintOptions extends EditOptions {
  /**
   * File, Buffer or tensor ([H, W], [1, H, W] or [B, 1, H, W]) of the image's height and
   * width: ≥ 0.5 (white) is repainted, < 0.5 (black) kept. Files are read as grayscale.
   */
  mask: ImageSource;
  /** How far toward noise the masked region starts, in [0, 1]. Default 1 (pure noise). */
  strength?: number;
  /** Latent models: copy the input's known pixels over the decoded result. Default true. */
  pasteBack?: boolean;
}

/** How a UNet takes the mask: blended after each step, or concatenated to its input. @example if (pipe.mode === "concat") console.log("an inpainting UNet"); */
export type InpaintMode = "blend" | "concat";

/**
 * @example
 * const pipe = InpaintPipeline.fromPretrained("models/sd-1.5");
 * const { images } = await pipe.inpaint({ image: "room.png", mask: "sofa-mask.png", prompt: "a red sofa", generator: new Generator(0) });
 * await writeImage(images.index(0), "room-red-sofa.png");
 */
export class InpaintPipeline {
  /** "blend" for a plain UNet, "concat" for an inpainting UNet (2·latent + 1 input channels). */
  readonly mode: InpaintMode;
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    this.model = model.requireTextToImage("InpaintPipeline");
    const latent = this.model.latentChannels;
    const inChannels = this.model.unet.config.in_channels;
    if (inChannels === latent) this.mode = "blend";
    else if (inChannels === 2 * latent + 1) this.mode = "concat";
    else throw new Error(`InpaintPipeline: the UNet takes ${inChannels} input channels; expected ${latent} (a plain model) or ${2 * latent + 1} (an inpainting model) for ${latent} latent channels`);
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): InpaintPipeline {
    return new InpaintPipeline(loadModel(dir, options));
  }

  /**
   * Repaints the mask's white part of each image along the prompts; returns (B, C, H, W) in
   * [0, 1] with B = prompts × numImagesPerPrompt. A mask with no white, or strength 0, returns
   * the input unchanged.
   * @example const { images } = await pipe.inpaint({ image, mask, prompt: "a cat", strength: 0.9, numInferenceSteps: 30 });
   */
  async inpaint(options: InpaintOptions): Promise<PipelineOutput> {
    const model = this.model;
    const strength = options.strength ?? 1;
    assertNumber(strength, "strength");
    if (strength < 0 || strength > 1) throw invalid("number in [0, 1]", "strength", strength);
    const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 50;
    assertInteger(steps, "numInferenceSteps", 1);
    const prompts = checkPrompts(options, "inpaint");
    const { count, perPrompt } = prompts;
    const pasteBack = options.pasteBack ?? true;
    if (typeof pasteBack !== "boolean") throw invalid("boolean", "pasteBack", pasteBack);
    const guider = callGuidance(model, options);
    throwIfAborted(options.signal);

    // Everything made here but the returned images is freed when the scope closes, also on abort.
    const scheduler = callScheduler(model, options.scheduler);
    return tidyAsync(async () => {
      const input = await model.readImages(options.image, { who: "inpaint image" });
      const [, , height, width] = input.shape;
      model.checkMemory(count * perPrompt * (guider.enabled ? guider.conditions.length : 1), { height, width }, "inpaint");
      const mask = await loadMask(options.mask, height, width); // (Bm, 1, H, W) bool
      const images = perSample(input, "images", count, perPrompt); // (B, C, H, W)
      const pixelMask = perSample(mask, "masks", count, perPrompt); // (B, 1, H, W)
      if (strength === 0 || !pixelMask.any().item()) return { images };

      scheduler.setTimesteps(steps);
      const { timesteps, startIndex } = timestepsForStrength(scheduler.timesteps, steps, strength, scheduler.order);
      if (timesteps.length === 0) return { images };
      scheduler.setBeginIndex(startIndex);

      // 1. The clean latents, one noise draw and the starting latents. The blend re-noises the
      //    known region with this same draw every step (as diffusers does; RePaint draws anew),
      //    so it stays one consistent noisy image along the trajectory.
      const device = model.device;
      const clean = onDevice(await model.imagesToLatents(images, options.generator), device); // (B, c, h, w)
      const noise = onDevice(randn(clean.shape, { generator: options.generator, dtype: clean.dtype }), device);
      // Strength 1 starts from pure noise, as text-to-image does.
      const latents = strength === 1 ? noise.mul(scheduler.initNoiseSigma) : scheduler.addNoise(clean, noise, [timesteps[0]]);
      const latentMask = onDevice(interpolate(pixelMask.float(), { size: clean.shape.slice(2), mode: "nearest" }).ge(0.5), device); // (B, 1, h, w)

      // 2. How the mask enters the loop.
      let afterStep: ((stepped: Tensor, i: number) => Tensor) | undefined;
      let extraInput: Tensor | undefined;
      if (this.mode === "blend") {
        afterStep = (stepped, i) => {
          const known = i < timesteps.length - 1 ? scheduler.addNoise(clean, noise, [timesteps[i + 1]]) : clean;
          return where(latentMask, stepped, known);
        };
      } else {
        // The masked image is gray (0 in [-1, 1]) where it will be repainted, as diffusers makes it.
        const masked = onDevice(await model.imagesToLatents(where(pixelMask, 0.5, images), options.generator), device); // (B, c, h, w)
        const condition = cat([latentMask.to(masked.dtype), masked], 1); // (B, 1 + c, h, w)
        const copies = guider.enabled ? guider.conditions.length : 1;
        extraInput = copies > 1 ? cat(Array(copies).fill(condition), 0) : condition; // (copies·B, 1 + c, h, w)
      }

      // 3. Denoise with the prompts.
      const context = await promptContext(model, options, prompts, guider.enabled);
      const final = await denoise({
        model, scheduler, guider: guider.enabled ? guider : null, latents, context, timesteps, afterStep, extraInput,
        signal: options.signal, onProgress: options.onProgress, generator: options.generator, eta: options.eta,
      });
      // denoise's result is exempt from tidy scopes (kept): free it by hand.
      const decoded = await model.latentsToImages(final).finally(() => final.dispose());
      const generated = onDevice(decoded, images.device); // (B, C, H, W) in [0, 1]

      // 4. Paste the known pixels back: exact in pixel space, optional (default on) for latent models.
      return { images: pasteBack || !model.vae ? where(pixelMask, generated, images) : generated };
    }).finally(() => scheduler.dispose());
  }
}

function onDevice(t: Tensor, device: string): Tensor {
  return t.device === device ? t : t.to({ device });
}

/** A batch of 1 or of one per prompt, repeated to one per generated image (prompt-major). */
function perSample(x: Tensor, what: string, prompts: number, perPrompt: number): Tensor {
  const n = x.shape[0];
  if (n !== 1 && n !== prompts) throw new Error(`inpaint: ${n} ${what} for ${prompts} prompts (give 1 or one per prompt)`);
  return tidy(() => {
    const rows = Array.from({ length: prompts * perPrompt }, (_, i) => (n === 1 ? 0 : Math.floor(i / perPrompt)));
    return cat(rows.map((r) => x.narrow(0, r, 1)), 0).contiguous();
  });
}

/**
 * Reads an inpainting mask as a (B, 1, H, W) bool tensor, true where ≥ 0.5 (repaint).
 * Files and Buffers are read as grayscale; tensors may be [H, W], [1, H, W] or [B, 1, H, W].
 * The mask must have the image's size: a mask of another size is more likely a mistake
 * than something to stretch.
 * @example const mask = await loadMask("mask.png", 512, 512); // (1, 1, 512, 512) bool
 */
export async function loadMask(source: ImageSource, height: number, width: number): Promise<Tensor> {
  const raw = typeof source === "string" || Buffer.isBuffer(source) ? await toImageTensor(source, { channels: 1 }) : source;
  try {
    if (raw.ndim < 2 || raw.ndim > 4 || (raw.ndim >= 3 && raw.shape[raw.ndim - 3] !== 1)) {
      throw new Error(`inpaint mask: expected a tensor [H, W], [1, H, W] or [B, 1, H, W] but received shape [${raw.shape.join(", ")}]`);
    }
    const [h, w] = raw.shape.slice(-2);
    if (h !== height || w !== width) throw new Error(`inpaint mask: expected ${height}×${width} (the image's size) but the mask is ${h}×${w}`);
    return tidy(() => raw.reshape([raw.ndim === 4 ? raw.shape[0] : 1, 1, h, w]).float().ge(0.5));
  } finally {
    if (raw !== source) raw.dispose();
  }
}
