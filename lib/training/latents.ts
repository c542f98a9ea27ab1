/**
 * Latent-diffusion training data: images through the model's image codec (the VAE encoder,
 * scaled as the pipelines decode), so a latent U-Net trains on exactly what it later denoises.
 */
import type { DiffusionModel } from "../models";
import { Generator, tidyAsync } from "../tensor";
import { mapDataset, type Dataset } from "./data";

/**
 * Encodes each sample's image (in [-1, 1]) to the model's latents: one posterior draw per
 * sample from a generator seeded `seed + index`, so a sample's latents are the same every
 * epoch and run. Pixel-space models get the images unchanged.
 * @example const data = latentDataset(new ImageFolderDataset("photos", { resolution: 512 }), loadModel("models/sd-1.5"));
 */
export function latentDataset(dataset: Dataset, model: DiffusionModel, options: { seed?: number } = {}): Dataset {
  const seed = options.seed ?? 0;
  return mapDataset(dataset, async (sample, index) => {
    const latents = await tidyAsync(async () => {
      const z = await model.encode(sample.image.unsqueeze(0), new Generator(seed + index)); // (1, c, h, w)
      return z.squeeze(0);
    });
    return { ...sample, image: latents };
  });
}
