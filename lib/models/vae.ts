/**
 * AutoencoderKL (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion
 * Models", 2022): images <-> latents. The exported module returns raw moments; the
 * diagonal Gaussian over latents is built here as diffusers' DiagonalGaussianDistribution.
 */
import type { Module } from "../module";
import type { Generator } from "../random";
import { randn, type Tensor } from "../tensor";
import { expectTensor, ModelComponent, type ComponentMeta } from "./component";

/** The diffusers `config.json` keys pipelines read. */
export interface AutoencoderKLConfig {
  _class_name?: string;
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  sample_size?: number;
  /** Latents are multiplied by it before diffusion (SD 1.x: 0.18215); default 0.18215. */
  scaling_factor?: number;
  /** Subtracted before scaling (SD3, Flux); default none. */
  shift_factor?: number | null;
  /** diffusers pipelines keep the VAE in float32 when this is true (SD 1.x/2.x, SDXL). */
  force_upcast?: boolean;
  [key: string]: unknown;
}

/**
 * The encoder's posterior N(mean, exp(logvar)) over latents, as diffusers'
 * DiagonalGaussianDistribution: `mean, logvar = moments.chunk(2, 1)`, logvar clamped to
 * [-30, 20], `std = exp(0.5 * logvar)`. A plain object, so `tidy` keeps its tensors when
 * it is returned; `dispose()` frees them all.
 */
export interface LatentDistribution {
  /** The encoder output (B, 2*latent_channels, h, w) (diffusers' `parameters`). */
  readonly moments: Tensor;
  readonly mean: Tensor; // (B, C, h, w)
  readonly logvar: Tensor; // (B, C, h, w), clamped
  readonly std: Tensor; // (B, C, h, w)
  readonly var: Tensor; // (B, C, h, w)
  /** `mean + std * randn(generator)`, the noise drawn in the distribution's dtype on the generator's device. */
  sample(generator?: Generator): Tensor;
  /** The mean (a new handle). */
  mode(): Tensor;
  dispose(): void;
}

/**
 * Builds the posterior from the encoder's moments; it takes ownership of `moments`.
 * @example const dist = latentDistribution(vae.module.forwardSync(x) as Tensor); const z = dist.sample(new Generator(0));
 */
export function latentDistribution(moments: Tensor): LatentDistribution {
  const [mean, rawLogvar] = moments.chunk(2, 1); // (B, C, h, w) each, views
  const logvar = rawLogvar.clamp(-30, 20);
  rawLogvar.dispose();
  const halfLogvar = logvar.mul(0.5);
  const std = halfLogvar.exp();
  halfLogvar.dispose();
  const variance = logvar.exp();
  return {
    moments,
    mean,
    logvar,
    std,
    var: variance,
    sample(generator?: Generator): Tensor {
      // diffusers' randn_tensor: draw on the generator's device, then move
      const device = generator?.device === "cpu" ? "cpu" : mean.device;
      const drawn = randn(mean.shape, { generator, dtype: mean.dtype, device }); // (B, C, h, w)
      const noise = drawn.device === mean.device ? drawn : drawn.to({ device: mean.device });
      const scaled = std.mul(noise);
      const z = mean.add(scaled); // (B, C, h, w)
      for (const t of new Set([drawn, noise, scaled])) t.dispose();
      return z;
    },
    mode(): Tensor {
      return mean.detach();
    },
    dispose(): void {
      for (const t of [moments, mean, logvar, std, variance]) t.dispose();
    },
  };
}

/**
 * The KL autoencoder: `encode(image)` gives a {@link LatentDistribution}, `decode(z)` an
 * image in [-1, 1]. Neither applies `scaling_factor` / `shift_factor`: use
 * {@link scaleLatents} / {@link unscaleLatents} as pipelines do.
 * @example
 * const { vae } = loadModel("models/sd-1.5");
 * const dist = await vae!.encode(image);                      // image (1, 3, 512, 512) in [-1, 1]
 * const latents = vae!.scaleLatents(dist.sample(new Generator(0))); // (1, 4, 64, 64)
 * const decoded = await vae!.decode(vae!.unscaleLatents(latents));
 */
export class AutoencoderKL extends ModelComponent<AutoencoderKLConfig> {
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta) {
    super(module, config, meta, { className: "AutoencoderKL", methods: ["encode", "decode", "forward"] });
  }

  /** `config.scaling_factor`, default 0.18215 as in diffusers. */
  get scalingFactor(): number {
    return typeof this.config.scaling_factor === "number" ? this.config.scaling_factor : 0.18215;
  }
  /** `config.shift_factor`, or 0 when the config has none. */
  get shiftFactor(): number {
    return typeof this.config.shift_factor === "number" ? this.config.shift_factor : 0;
  }
  /** Pixels per latent along each side: 2^(len(block_out_channels) - 1) (8 for SD). */
  get downsampleFactor(): number {
    const blocks = Array.isArray(this.config.block_out_channels) ? this.config.block_out_channels.length : 4;
    return 2 ** (blocks - 1);
  }

  /** [async] The posterior over latents of `x` (B, in_channels, H, W). */
  async encode(x: Tensor): Promise<LatentDistribution> {
    const who = "AutoencoderKL.encode";
    return latentDistribution(await this.invoke(who, "encode", (i) => [i.float(x, "x")], (out) => expectTensor(out, who), true));
  }
  /** [sync] The twin of {@link encode}. */
  encodeSync(x: Tensor): LatentDistribution {
    const who = "AutoencoderKL.encodeSync";
    return latentDistribution(this.invokeSync(who, "encode", (i) => [i.float(x, "x")], (out) => expectTensor(out, who)));
  }

  /** [async] The image (B, out_channels, h*f, w*f) of unscaled latents `z` (B, latent_channels, h, w). */
  decode(z: Tensor): Promise<Tensor> {
    const who = "AutoencoderKL.decode";
    return this.invoke(who, "decode", (i) => [i.float(z, "z")], (out) => expectTensor(out, who), true);
  }
  /** [sync] The twin of {@link decode}. */
  decodeSync(z: Tensor): Tensor {
    const who = "AutoencoderKL.decodeSync";
    return this.invokeSync(who, "decode", (i) => [i.float(z, "z")], (out) => expectTensor(out, who));
  }

  /** [async] `decode(encode(x).mean)` in one module call, like diffusers' `forward(sample_posterior=False)`. */
  forward(x: Tensor): Promise<Tensor> {
    const who = "AutoencoderKL.forward";
    return this.invoke(who, "forward", (i) => [i.float(x, "x")], (out) => expectTensor(out, who));
  }
  /** [sync] The twin of {@link forward}. */
  forwardSync(x: Tensor): Tensor {
    const who = "AutoencoderKL.forwardSync";
    return this.invokeSync(who, "forward", (i) => [i.float(x, "x")], (out) => expectTensor(out, who));
  }

  /** Encoder latents -> diffusion latents: `(z - shift_factor) * scaling_factor`. @example const latents = vae.scaleLatents(dist.sample()); */
  scaleLatents(z: Tensor): Tensor {
    if (this.shiftFactor === 0) return z.mul(this.scalingFactor);
    const shifted = z.sub(this.shiftFactor);
    const scaled = shifted.mul(this.scalingFactor);
    shifted.dispose();
    return scaled;
  }
  /** Diffusion latents -> decoder latents: `z / scaling_factor + shift_factor`. @example const image = vae.decodeSync(vae.unscaleLatents(latents)); */
  unscaleLatents(latents: Tensor): Tensor {
    const unscaled = latents.div(this.scalingFactor);
    if (this.shiftFactor === 0) return unscaled;
    const shifted = unscaled.add(this.shiftFactor);
    unscaled.dispose();
    return shifted;
  }
}
