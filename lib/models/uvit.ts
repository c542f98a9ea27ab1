/**
 * UViT2DModel: Simple Diffusion's U-ViT (Hoogeboom, Heek & Salimans 2023, "simple diffusion",
 * §3.4) as scripts/torch_diffusion_models/uvit.py defines it — convolutional ResBlocks at the high
 * resolutions, transformer blocks at the lowest — class-conditional with DiT's call, so it fills
 * a model directory's `transformer` slot and runs in the same pipelines and trainer.
 */
import type { Module } from "../module";
import type { ComponentMeta } from "./component";
import { DiTTransformer2DModel } from "./dit";

/** The `config.json` keys of a UViT2DModel (see the Python definition for all of them). */
export interface UViT2DConfig {
  sample_size: number;
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  transformer_width: number;
  transformer_layers: number;
  /** Number of classes; label `num_class_embeds` is the null class used by CFG. */
  num_class_embeds: number;
  [key: string]: unknown;
}

/**
 * The U-ViT denoiser: `forward({ hiddenStates, timestep, classLabels })` -> (B, out_channels, H, W).
 * @example
 * const model = loadModel("runs/uvit-shifted-multiscale/model");
 * const v = await model.transformer!.forward({ hiddenStates: x, timestep: 500, classLabels: [7] });
 */
export class UViT2DModel extends DiTTransformer2DModel {
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta) {
    super(module, config, meta, { className: "UViT2DModel", methods: ["forward"] });
  }

  /** The id of the unconditional ("null") class, for classifier-free guidance. */
  override get nullClassLabel(): number | undefined {
    return (this.config as unknown as UViT2DConfig).num_class_embeds;
  }
}
