/**
 * What every diffusion pipeline shares: prompt encoding, the denoising loop (scheduler +
 * guider + model calls, one tidy scope per step) and the latent <-> image mapping.
 *
 * Inference records no autograd history (diffusers pipelines run under torch.no_grad):
 * loaded modules' parameters require grad, and a recorded graph would keep every step's
 * activations alive until the images are freed. Grad mode is switched off only around
 * synchronous stretches and the queueing of module calls (which capture the mode when
 * queued), never across an await, so training code running meanwhile keeps its graph.
 */
import { noGrad } from "../autograd";
import type { Guider } from "../guidance";
import type { AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection, UNet2DConditionModel } from "../models";
import type { Scheduler } from "../schedulers";
import { cat, keep, tidy, tidyAsync, type Generator, type Tensor } from "../tensor";
import type { CLIPTokenizer } from "../tokenizers";

export interface ProgressInfo {
  step: number;
  total: number;
  timestep: number;
  /** The current latents; valid only during the callback (clone to keep). */
  latents: Tensor;
}

export interface LoopOptions {
  signal?: AbortSignal;
  onProgress?: (info: ProgressInfo) => void;
  generator?: Generator;
  eta?: number;
}

/** The components a latent or pixel text-to-image model needs. */
export interface TextToImageComponents {
  unet: UNet2DConditionModel;
  scheduler: Scheduler;
  textEncoder: CLIPTextModel | CLIPTextModelWithProjection;
  tokenizer: CLIPTokenizer;
  /** Absent for pixel-space models. */
  vae?: AutoencoderKL;
}

export function abortError(): Error {
  const error = new Error("The operation was aborted");
  error.name = "AbortError";
  return error;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError();
}

/** Spatial downsampling of the VAE (1 in pixel space). */
export function vaeScaleFactor(vae: AutoencoderKL | undefined): number {
  return vae ? 2 ** (vae.config.block_out_channels.length - 1) : 1;
}

/** The image size the model was trained at: the U-Net's sample size times the VAE's factor. */
export function defaultImageSize(c: Pick<TextToImageComponents, "unet" | "vae">): number {
  const size = c.unet.config.sample_size ?? 64;
  return (Array.isArray(size) ? size[0] : size) * vaeScaleFactor(c.vae);
}

/** Images in [0, 1] -> model space: scaled VAE latents, or [-1, 1] pixels. */
export async function imagesToLatents(vae: AutoencoderKL | undefined, images: Tensor, generator?: Generator): Promise<Tensor> {
  const x = noGrad(() => tidy(() => images.mul(2).sub(1)));
  if (!vae) return x;
  return encodeLatents(vae, x, generator).finally(() => x.dispose());
}

/** Images in [-1, 1] -> scaled VAE latents: one posterior draw, `(z - shift) * scaling`. */
export async function encodeLatents(vae: AutoencoderKL, x: Tensor, generator?: Generator): Promise<Tensor> {
  const posterior = await noGrad(() => vae.encode(x));
  const scaling = vae.config.scaling_factor ?? 0.18215;
  const shift = vae.config.shift_factor ?? 0;
  try {
    return noGrad(() => tidy(() => posterior.sample(generator).sub(shift).mul(scaling)));
  } finally {
    posterior.dispose();
  }
}

/** Model space -> images in [0, 1]. */
export async function latentsToImages(vae: AutoencoderKL | undefined, latents: Tensor): Promise<Tensor> {
  if (!vae) return noGrad(() => tidy(() => latents.div(2).add(0.5).clamp(0, 1).float()));
  const z = noGrad(() => tidy(() => latents.div(vae.config.scaling_factor ?? 0.18215).add(vae.config.shift_factor ?? 0)));
  const decoded = await noGrad(() => vae.decode(z)).finally(() => z.dispose());
  try {
    return noGrad(() => tidy(() => decoded.div(2).add(0.5).clamp(0, 1).float()));
  } finally {
    decoded.dispose();
  }
}

export interface DenoiseArgs extends LoopOptions {
  unet: UNet2DConditionModel;
  scheduler: Scheduler;
  guider: Guider | null;
  latents: Tensor;
  context: Tensor;
  timesteps: number[];
  /** Called after each step with the new latents and the next timestep (inpainting blends here). */
  afterStep?: (latents: Tensor, stepIndex: number) => Tensor;
  /** Extra channels concatenated to the model input (InstructPix2Pix image latents, inpainting masks). */
  extraInput?: Tensor;
}

/** Runs `denoise`, then decodes the final latents to images in [0, 1]; frees the latents and `args.context`. */
export async function denoiseToImages(vae: AutoencoderKL | undefined, args: DenoiseArgs): Promise<Tensor> {
  try {
    const final = await denoise(args);
    try {
      return await latentsToImages(vae, final);
    } finally {
      final.dispose();
    }
  } finally {
    args.context.dispose();
  }
}

/**
 * The sampling loop: for each timestep, scale, predict (all conditions in one batch),
 * guide, step. Owns `latents` (disposes it) and returns the final latents.
 */
export async function denoise(args: DenoiseArgs): Promise<Tensor> {
  const { unet, scheduler, guider, timesteps } = args;
  const copies = guider ? guider.conditions.length : 1;
  let latents = args.latents;
  try {
    for (let i = 0; i < timesteps.length; i++) {
      throwIfAborted(args.signal);
      const t = timesteps[i];
      const next = await tidyAsync(async () => {
        const prediction = await noGrad(() => {
          const batched = copies > 1 ? cat(Array(copies).fill(latents), 0) : latents; // (copies·B, C, h, w)
          let input = scheduler.scaleModelInput(batched, t);
          if (args.extraInput) input = cat([input, args.extraInput], 1);
          return unet.forward({ sample: input, timestep: t, encoderHiddenStates: args.context });
        });
        return noGrad(() => {
          const guided = guider ? guider.combine(prediction.chunk(copies, 0)) : prediction;
          let stepped = scheduler.step(guided, t, latents, { generator: args.generator, eta: args.eta }).prevSample;
          if (args.afterStep) stepped = args.afterStep(stepped, i);
          return keep(stepped);
        });
      });
      latents.dispose();
      latents = next;
      args.onProgress?.({ step: i + 1, total: timesteps.length, timestep: t, latents });
    }
    return latents;
  } catch (error) {
    latents.dispose();
    throw error;
  }
}
