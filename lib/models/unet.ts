/**
 * UNet2DConditionModel (SD 1.x/2.x, SDXL `text_time`, inpainting 9-channel and
 * InstructPix2Pix 8-channel inputs) called by argument name.
 */
import { describe, invalid } from "../errors";
import type { Module } from "../module";
import { isTensor, type Tensor } from "../tensor";
import { argsObject, disposeResult, expectTensor, ModelComponent, type CallInputs, type ComponentMeta } from "./component";

/** The diffusers `config.json` keys pipelines read (all others are kept as read). */
export interface UNet2DConditionConfig {
  _class_name?: string;
  sample_size?: number | number[];
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  cross_attention_dim: number | number[];
  attention_head_dim?: number | number[];
  layers_per_block?: number | number[];
  down_block_types?: string[];
  up_block_types?: string[];
  /** "text_time" for SDXL: `textEmbeds` and `timeIds` are required. */
  addition_embed_type?: string | null;
  addition_time_embed_dim?: number | null;
  projection_class_embeddings_input_dim?: number | null;
  time_cond_proj_dim?: number | null;
  [key: string]: unknown;
}

/** Named inputs of {@link UNet2DConditionModel.forward}. */
export interface UNetForwardArgs {
  /** Noisy latents (B, in_channels, H, W); cast to the UNet's dtype and device. */
  sample: Tensor;
  /** A number, or a Tensor of shape (), (1,) or (B,), int64 or float; broadcast to B. */
  timestep: number | number[] | Tensor;
  /** Text-encoder states (B, T, cross_attention_dim). */
  encoderHiddenStates: Tensor;
  /** SDXL pooled text embeddings (B, projection_class_embeddings_input_dim - 6*addition_time_embed_dim). */
  textEmbeds?: Tensor | null;
  /** SDXL micro-conditioning (B, 6): original size, crop top-left, target size. */
  timeIds?: Tensor | null;
}

/** Named inputs of {@link UNet2DConditionModel.forwardAttentionControl}: forward's, plus the control. */
export interface UNetAttentionControlArgs extends UNetForwardArgs {
  /**
   * Omitted or `[]`: every cross-attention layer attends with its own probabilities (the prediction
   * equals `forward`'s). Else one tensor per cross-attention layer, of the shapes the call records:
   * each layer attends with `replacement + ownWeight · (its own probabilities)` instead.
   */
  replacements?: Tensor[];
  /** Broadcast to the probabilities' shape, e.g. (B, 1, 1, T); omitted or null means 0 (the replacements alone). */
  ownWeight?: Tensor | null;
}

/** What {@link UNet2DConditionModel.forwardAttentionControl} returns. */
export interface UNetAttentionControlOutput {
  /** The prediction (B, out_channels, H, W), as `forward` gives it. */
  sample: Tensor;
  /** Each cross-attention layer's softmax(QKᵀ) (B, heads, H_l·W_l, T) float32, in the U-Net's order: down, mid, up. */
  attentionProbs: Tensor[];
}

const EXPECTED = "{sample, timestep, encoderHiddenStates, textEmbeds?, timeIds?}";
const CONTROL_METHOD = "forward_attention_control";

/**
 * The denoising UNet of Stable Diffusion and SDXL; `forward` predicts noise (or v, or x0,
 * as its scheduler config's `prediction_type` says) in the UNet's dtype.
 * @example
 * const { unet } = loadModel("models/sd-1.5");
 * const eps = await unet!.forward({ sample: latents, timestep: 981, encoderHiddenStates: context }); // (B, 4, 64, 64)
 */
export class UNet2DConditionModel extends ModelComponent<UNet2DConditionConfig> {
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta) {
    super(module, config, meta, { className: "UNet2DConditionModel", methods: ["forward"] });
  }

  /** True for SDXL-style UNets that need `textEmbeds` and `timeIds`. */
  get needsAddedConditions(): boolean {
    return this.config.addition_embed_type === "text_time";
  }

  /** [async] The noise prediction (B, out_channels, H, W). */
  forward(args: UNetForwardArgs): Promise<Tensor> {
    const who = "UNet2DConditionModel.forward";
    return this.invoke(who, "forward", (inputs) => this.inputs(args, inputs), (out) => expectTensor(out, who), true);
  }

  /** [sync] The twin of {@link forward}. @example const eps = unet.forwardSync({ sample, timestep: 500, encoderHiddenStates }); */
  forwardSync(args: UNetForwardArgs): Tensor {
    const who = "UNet2DConditionModel.forwardSync";
    return this.invokeSync(who, "forward", (inputs) => this.inputs(args, inputs), (out) => expectTensor(out, who));
  }

  /**
   * Whether the module has `forward_attention_control` (exports since prompt-to-prompt support;
   * older ones are re-exported with `torch-diffusion convert`).
   */
  get hasAttentionControl(): boolean {
    return this.module.methodNames().includes(CONTROL_METHOD);
  }

  /**
   * [async] The prediction and every cross-attention layer's probabilities, optionally attending with
   * given ones instead (prompt-to-prompt's hook; scripts/torch_diffusion_models/unet_2d_condition.py).
   * Without replacements the prediction equals {@link forward}'s (bit for bit for non-fused exports).
   * @example
   * const { sample, attentionProbs } = await unet.forwardAttentionControl({ sample: x, timestep: 500, encoderHiddenStates: context });
   * const edited = await unet.forwardAttentionControl({ sample: x, timestep: 500, encoderHiddenStates: other, replacements: attentionProbs });
   */
  forwardAttentionControl(args: UNetAttentionControlArgs): Promise<UNetAttentionControlOutput> {
    const who = "UNet2DConditionModel.forwardAttentionControl";
    if (!this.hasAttentionControl) {
      throw new Error(`${who}: this U-Net was exported without ${CONTROL_METHOD}: re-export it with torch-diffusion convert`);
    }
    return this.invoke(who, CONTROL_METHOD, (inputs) => this.controlInputs(args, inputs), (out) => controlOutput(out, who), true);
  }

  private controlInputs(args: UNetAttentionControlArgs, inputs: CallInputs): unknown[] {
    const [sample, timestep, context, textEmbeds, timeIds] = this.inputs(args, inputs);
    const replacements = args.replacements ?? [];
    if (!Array.isArray(replacements)) throw invalid("array of Tensors", `replacements of ${inputs.who}`, replacements);
    const ownWeight = args.ownWeight == null ? null : inputs.onDevice(args.ownWeight, "ownWeight");
    return [sample, timestep, context, replacements.map((r, i) => inputs.onDevice(r, `replacements[${i}]`)), ownWeight, textEmbeds, timeIds];
  }

  private inputs(args: UNetForwardArgs, inputs: CallInputs): unknown[] {
    const a = argsObject<UNetForwardArgs>(args, inputs.who, EXPECTED);
    if (this.needsAddedConditions && (a.textEmbeds == null || a.timeIds == null)) {
      throw new Error(`${inputs.who}: this UNet (addition_embed_type "text_time", SDXL) needs textEmbeds and timeIds`);
    }
    return [
      inputs.float(a.sample, "sample"), // (B, Cin, H, W)
      inputs.timestep(a.timestep, "timestep"), // (), (1,) or (B,)
      inputs.float(a.encoderHiddenStates, "encoderHiddenStates"), // (B, T, D)
      inputs.optionalFloat(a.textEmbeds, "textEmbeds"), // (B, P) or None
      inputs.optionalFloat(a.timeIds, "timeIds"), // (B, 6) or None
    ];
  }
}

/** Checks and names `forward_attention_control`'s (prediction, probabilities) result, freeing it when malformed. */
function controlOutput(out: unknown, who: string): UNetAttentionControlOutput {
  if (Array.isArray(out) && out.length === 2 && isTensor(out[0]) && Array.isArray(out[1]) && out[1].every(isTensor)) {
    return { sample: out[0], attentionProbs: out[1] as Tensor[] };
  }
  disposeResult(out);
  throw new Error(`${who}: expected the module to return (Tensor, Tensor[]) but it returned ${describe(out)}`);
}
