/**
 * Latent-diffusion training data: images through the VAE encoder, scaled as the pipelines
 * decode them, so a latent U-Net trains on exactly what it later denoises.
 */
import type { AutoencoderKL } from "../models";
import { encodeLatents } from "../pipelines/common";
import { Generator, tidyAsync } from "../tensor";
import { mapDataset, type Dataset } from "./data";

/**
 * Encodes each sample's image (in [-1, 1]) to VAE latents: one posterior draw per sample from
 * a generator seeded `seed + index`, so a sample's latents are the same every epoch and run.
 * @example const data = latentDataset(new ImageFolderDataset("photos", { resolution: 512 }), sd.vae!);
 */
export function latentDataset(dataset: Dataset, vae: AutoencoderKL, options: { seed?: number } = {}): Dataset {
  const seed = options.seed ?? 0;
  return mapDataset(dataset, async (sample, index) => {
    const latents = await tidyAsync(async () => {
      const z = await encodeLatents(vae, sample.image.unsqueeze(0), new Generator(seed + index)); // (1, c, h, w)
      return z.squeeze(0);
    });
    return { ...sample, image: latents };
  });
}
