/**
 * CLIP text encoders (Radford et al., "Learning Transferable Visual Models From Natural
 * Language Supervision", 2021) as transformers' CLIPTextModel / CLIPTextModelWithProjection,
 * called by argument name.
 */
import type { Module } from "../module";
import type { Tensor } from "../tensor";
import { argsObject, expectTensor, expectTensors, ModelComponent, type CallInputs, type ComponentMeta } from "./component";

/** The transformers `config.json` keys pipelines read. */
export interface CLIPTextConfig {
  architectures?: string[];
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads?: number;
  max_position_embeddings: number;
  /** Width of `textEmbeds` (CLIPTextModelWithProjection). */
  projection_dim?: number;
  bos_token_id?: number;
  eos_token_id?: number;
  pad_token_id?: number;
  [key: string]: unknown;
}

/** Named inputs of the text encoders. */
export interface CLIPTextArgs {
  /** Token ids (B, T): `number[][]` (made int64) or an integer Tensor. */
  inputIds: number[][] | Tensor;
  /** 1 keep, 0 pad (B, T); omit for none (Stable Diffusion passes none). */
  attentionMask?: number[][] | Tensor | null;
}

/** Outputs of the text encoders, in the module's dtype. */
export interface CLIPTextOutput {
  /** (B, T, hidden_size), after the final layer norm. */
  lastHiddenState: Tensor;
  /** (B, hidden_size): lastHiddenState at the end-of-text token. */
  pooledOutput: Tensor;
  /** (B, T, hidden_size): transformers' `hidden_states[-2]` (no final norm; SDXL's conditioning, "clip skip 1"). */
  penultimateHiddenState: Tensor;
  /** (B, projection_dim): the projected pooled output (CLIPTextModelWithProjection only). */
  textEmbeds?: Tensor;
}

const EXPECTED = "{inputIds, attentionMask?}";

/** The common part of both CLIP text encoders. */
abstract class CLIPTextBase extends ModelComponent<CLIPTextConfig> {
  protected constructor(module: Module, config: Record<string, unknown>, meta: ComponentMeta | undefined, className: string) {
    super(module, config, meta, { className, methods: ["forward"] });
  }

  protected abstract readonly outputCount: number;

  private inputs(args: CLIPTextArgs, inputs: CallInputs): unknown[] {
    const a = argsObject<CLIPTextArgs>(args, inputs.who, EXPECTED);
    return [inputs.ids(a.inputIds, "inputIds"), inputs.optionalIds(a.attentionMask, "attentionMask")]; // (B, T), (B, T) or None
  }

  private outputs(out: unknown, who: string): CLIPTextOutput {
    const [lastHiddenState, pooledOutput, penultimateHiddenState, textEmbeds] = expectTensors(out, this.outputCount, who);
    return textEmbeds ? { lastHiddenState, pooledOutput, penultimateHiddenState, textEmbeds } : { lastHiddenState, pooledOutput, penultimateHiddenState };
  }

  /** [async] Encodes token ids. */
  forward(args: CLIPTextArgs): Promise<CLIPTextOutput> {
    const who = `${this.className}.forward`;
    return this.invoke(who, "forward", (i) => this.inputs(args, i), (out) => this.outputs(out, who));
  }
  /** [sync] The twin of {@link forward}. */
  forwardSync(args: CLIPTextArgs): CLIPTextOutput {
    const who = `${this.className}.forwardSync`;
    return this.invokeSync(who, "forward", (i) => this.inputs(args, i), (out) => this.outputs(out, who));
  }

  /**
   * [async] Every layer's hidden states: the embeddings, then each encoder layer
   * (num_hidden_layers + 1 tensors (B, T, hidden_size), no final norm), for "clip skip".
   * @example const states = await te.hiddenStates({ inputIds }); const skip2 = te.finalLayerNormSync(states.at(-3)!);
   */
  hiddenStates(args: CLIPTextArgs): Promise<Tensor[]> {
    const who = `${this.className}.hiddenStates`;
    return this.invoke(who, "all_hidden_states", (i) => this.inputs(args, i), (out) => expectTensors(out, 1, who));
  }
  /** [sync] The twin of {@link hiddenStates}. */
  hiddenStatesSync(args: CLIPTextArgs): Tensor[] {
    const who = `${this.className}.hiddenStatesSync`;
    return this.invokeSync(who, "all_hidden_states", (i) => this.inputs(args, i), (out) => expectTensors(out, 1, who));
  }

  /** [async] The final layer norm applied to hidden states (B, T, hidden_size). */
  finalLayerNorm(hiddenStates: Tensor): Promise<Tensor> {
    const who = `${this.className}.finalLayerNorm`;
    return this.invoke(who, "final_layer_norm", (i) => [i.float(hiddenStates, "hiddenStates")], (out) => expectTensor(out, who));
  }
  /** [sync] The twin of {@link finalLayerNorm}. */
  finalLayerNormSync(hiddenStates: Tensor): Tensor {
    const who = `${this.className}.finalLayerNormSync`;
    return this.invokeSync(who, "final_layer_norm", (i) => [i.float(hiddenStates, "hiddenStates")], (out) => expectTensor(out, who));
  }
}

/**
 * The text encoder of Stable Diffusion 1.x/2.x (and SDXL's first encoder).
 * @example
 * const { textEncoder, tokenizer } = loadModel("models/sd-1.5");
 * const ids = tokenizer!.encode("a photo of a cat").inputIds;           // number[] of 77
 * const { lastHiddenState } = await textEncoder!.forward({ inputIds: [ids] }); // (1, 77, 768)
 */
export class CLIPTextModel extends CLIPTextBase {
  protected readonly outputCount = 3;
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta) {
    super(module, config, meta, "CLIPTextModel");
  }
}

/**
 * The projected text encoder (SDXL's `text_encoder_2`): also returns `textEmbeds`.
 * @example
 * const { penultimateHiddenState, textEmbeds } = await textEncoder2.forward({ inputIds: [ids] }); // (1, 77, 1280), (1, 1280)
 */
export class CLIPTextModelWithProjection extends CLIPTextBase {
  protected readonly outputCount = 4;
  constructor(module: Module, config: Record<string, unknown>, meta?: ComponentMeta) {
    super(module, config, meta, "CLIPTextModelWithProjection");
  }
  /** [async] Like CLIPTextModel's, with `textEmbeds` always present. */
  override forward(args: CLIPTextArgs): Promise<Required<CLIPTextOutput>> {
    return super.forward(args) as Promise<Required<CLIPTextOutput>>;
  }
  /** [sync] The twin of {@link forward}. */
  override forwardSync(args: CLIPTextArgs): Required<CLIPTextOutput> {
    return super.forwardSync(args) as Required<CLIPTextOutput>;
  }
}
