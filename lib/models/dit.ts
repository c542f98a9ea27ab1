/**
 * DiTTransformer2DModel (Peebles & Xie, "Scalable Diffusion Models with Transformers", 2023):
 * a class-conditional latent transformer, called by argument name.
 */
import type { Module } from "../module";
import type { Tensor } from "../tensor";
import { argsObject, expectTensor, ModelComponent, type CallInputs, type ComponentMeta, type ComponentSpec } from "./component";

/** The diffusers `config.json` keys pipelines read. */
export interface DiTTransformer2DConfig {
  _class_name?: string;
  sample_size: number;
  patch_size: number;
  in_channels: number;
  /** 2 * in_channels when the model also predicts the variance (learned sigma). */
  out_channels?: number | null;
  num_layers?: number;
  num_attention_heads?: number;
  attention_head_dim?: number;
  /** Number of classes; label `num_embeds_ada_norm` is the null class used by CFG. */
  num_embeds_ada_norm?: number;
  [key: string]: unknown;
}

/** Named inputs of {@link DiTTransformer2DModel.forward}. */
export interface DiTForwardArgs {
  /** Latents (B, in_channels, H, W); cast to the model's dtype and device. */
  hiddenStates: Tensor;
  /** A number, or a Tensor of shape () or (B,); broadcast to B. */
  timestep: number | number[] | Tensor;
  /** ImageNet class ids: a number, `number[]` (B) or an integer Tensor. */
  classLabels: number | number[] | Tensor;
}

const EXPECTED = "{hiddenStates, timestep, classLabels}";

/**
 * The DiT denoiser: `forward` returns (B, out_channels, H, W), noise first and, for
 * learned-sigma models, the variance channels after it.
 * @example
 * const { transformer } = loadModel("models/DiT-XL-2-256");
 * const out = await transformer!.forward({ hiddenStates: latents, timestep: 999, classLabels: [207, 1000] });
 */
export class DiTTransformer2DModel extends ModelComponent<DiTTransformer2DConfig> {
  /** `spec` lets class-conditional denoisers with DiT's call (e.g. UViT2DModel) share this wrapper. */
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta, spec: ComponentSpec = { className: "DiTTransformer2DModel", methods: ["forward"] }) {
    super(module, config, meta, spec);
  }

  /** The id of the unconditional ("null") class, for classifier-free guidance. */
  get nullClassLabel(): number | undefined {
    return this.config.num_embeds_ada_norm;
  }

  /** [async] The model output (B, out_channels, H, W). */
  forward(args: DiTForwardArgs): Promise<Tensor> {
    const who = `${this.className}.forward`;
    return this.invoke(who, "forward", (inputs) => this.inputs(args, inputs), (out) => expectTensor(out, who), true);
  }

  /** [sync] The twin of {@link forward}. @example const out = dit.forwardSync({ hiddenStates, timestep: 250, classLabels: 3 }); */
  forwardSync(args: DiTForwardArgs): Tensor {
    const who = `${this.className}.forwardSync`;
    return this.invokeSync(who, "forward", (inputs) => this.inputs(args, inputs), (out) => expectTensor(out, who));
  }

  private inputs(args: DiTForwardArgs, inputs: CallInputs): unknown[] {
    const a = argsObject<DiTForwardArgs>(args, inputs.who, EXPECTED);
    const labels = typeof a.classLabels === "number" ? [a.classLabels] : a.classLabels;
    const classLabels = inputs.ids(labels, "classLabels"); // (B,) or (1,)
    return [
      inputs.float(a.hiddenStates, "hiddenStates"), // (B, C, H, W)
      inputs.timestep(a.timestep, "timestep"), // (), (1,) or (B,)
      classLabels,
    ];
  }
}
