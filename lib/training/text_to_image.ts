/**
 * What trains when fineTune or DreamBooth fine-tunes a text-to-image model, in one place:
 *
 * - the U-Net: all its weights, or (with `lora`) low-rank adapters on its attention projections;
 * - with `trainTextEncoder`, the text encoder too — diffusers' `--train_text_encoder`: all its
 *   weights, or with `lora` adapters on its attention projections (`q_proj`, `k_proj`, `v_proj`,
 *   `out_proj`, same rank and alpha, as diffusers' `train_dreambooth_lora.py`). The prompts are
 *   then encoded inside the Trainer's step with autograd on ({@link TrainedParts.encode}), so the
 *   loss reaches the text encoder; frozen, they are encoded without it as before.
 *
 * Whenever anything but the U-Net's own weights trains, the Trainer gets the trained tensors
 * through its `parameters` option: the U-Net's under their names, the text encoder's behind
 * `text_encoder.`. Its checkpoints then hold both with their AdamW state (exact resume), an EMA
 * averages both, and data-parallel training averages both gradients. The U-Net's weights alone
 * keep the Trainer's default (the module's own parameters), so such runs and their checkpoints
 * are as they were. One learning rate serves both networks, as in diffusers' `train_dreambooth.py`.
 */
import * as path from "node:path";
import { enableGrad, noGrad } from "../autograd";
import type { TextToImageModel } from "../models";
import type { Module } from "../module";
import { replaceFileAtomic } from "../serialize";
import type { Tensor } from "../tensor";
import type { EMA } from "./ema";
import { LORA_WEIGHTS_FILE, LoRA, TEXT_ENCODER_LORA_TARGETS, saveLoRAWeights, type LoRAOptions } from "./lora";
import { independentCopy } from "./trainer";

/** The prefix of the text encoder's tensors among a run's trained tensors (checkpoints, EMA). */
export const TEXT_ENCODER_PREFIX = "text_encoder.";

export interface TrainedPartsOptions {
  /** Adapters instead of whole weights (the text encoder's too, with `trainTextEncoder`). */
  lora?: LoRAOptions;
  /** Train the text encoder with the U-Net. Default false. */
  trainTextEncoder?: boolean;
  /** Seed of the U-Net adapters' A when `lora.seed` is not given; the text encoder's use it + 1. */
  seed: number;
}

/**
 * The trained parts of a text-to-image model, wired for a Trainer.
 * @example
 * const parts = TrainedParts.create(model, { trainTextEncoder: true, seed: 0 });
 * const trainer = new Trainer(model.unet.module, data, { ...objective, parameters: parts.parameters,
 *   condition: captionCondition((captions) => parts.encode(captions)), forward: parts.forward });
 * await trainer.run();
 * parts.fuse();
 * parts.write("out");
 * parts.dispose();
 */
export class TrainedParts {
  /** The Trainer's `parameters`: undefined when the U-Net's own weights alone train (the Trainer takes them from the module). */
  readonly parameters: Record<string, Tensor> | undefined;
  /** Module parameter handles this object holds for `parameters`. */
  private readonly handles: Tensor[] = [];
  /** EMA copies of wholly trained modules ({@link useAverages}): written instead of the modules. */
  private averaged: { unet?: Module; textEncoder?: Module } = {};

  private constructor(
    readonly model: TextToImageModel,
    readonly unetLoRA: LoRA | null,
    readonly textEncoderLoRA: LoRA | null,
    readonly trainTextEncoder: boolean,
  ) {
    if (!trainTextEncoder) {
      this.parameters = unetLoRA?.parameters();
      return;
    }
    const trainable = (module: Module): Record<string, Tensor> => {
      const named = module.namedParameters() as Record<string, Tensor>;
      for (const p of Object.values(named)) {
        p.requiresGrad = true;
        this.handles.push(p);
      }
      return named;
    };
    const unet = unetLoRA ? unetLoRA.parameters() : trainable(model.unet.module);
    const textEncoder = textEncoderLoRA ? textEncoderLoRA.parameters() : trainable(model.textEncoder.module);
    this.parameters = { ...unet };
    for (const [name, p] of Object.entries(textEncoder)) this.parameters[`${TEXT_ENCODER_PREFIX}${name}`] = p;
  }

  /** Adapters (B = 0: the model computes as before) or whole weights, as `o` says; LoRA freezes the base weights. */
  static create(model: TextToImageModel, o: TrainedPartsOptions): TrainedParts {
    const seed = o.lora?.seed ?? o.seed;
    const unetLoRA = o.lora ? LoRA.create(model.unet.module, { ...o.lora, seed }) : null;
    let textEncoderLoRA: LoRA | null = null;
    try {
      if (o.lora && o.trainTextEncoder) textEncoderLoRA = LoRA.create(model.textEncoder.module, { rank: o.lora.rank, alpha: o.lora.alpha, init: o.lora.init, seed: seed + 1, targets: TEXT_ENCODER_LORA_TARGETS });
      return new TrainedParts(model, unetLoRA, textEncoderLoRA, o.trainTextEncoder === true);
    } catch (error) {
      textEncoderLoRA?.dispose();
      unetLoRA?.unfuse();
      unetLoRA?.dispose();
      throw error;
    }
  }

  /** The components whose weights a run writes: the U-Net, and the text encoder when it trains. */
  get components(): string[] {
    return this.trainTextEncoder ? ["unet", "text_encoder"] : ["unet"];
  }

  /**
   * Prompt embeddings (B, T, D) for the Trainer's condition. A trained text encoder runs with
   * autograd on (its adapters applied first), so backward reaches it; a frozen one runs
   * `model.encodePrompt`, without.
   */
  async encode(captions: string[]): Promise<Tensor> {
    if (!this.trainTextEncoder) return this.model.encodePrompt(captions);
    const { tokenizer, textEncoder } = this.model;
    this.textEncoderLoRA?.apply();
    const { inputIds } = tokenizer.encode(captions, { maxLength: tokenizer.modelMaxLength, padding: "max_length" });
    const output = enableGrad(() => textEncoder.forwardSync({ inputIds }));
    for (const [name, t] of Object.entries(output)) if (name !== "lastHiddenState") (t as Tensor | undefined)?.dispose();
    return output.lastHiddenState; // (B, T, D), with its history back to the trained weights
  }

  /** The Trainer's `forward`: the U-Net (its adapters applied first) on the batch's embeddings. */
  readonly forward = (_module: Module, sample: Tensor, timestep: Tensor, batch: { cond: unknown }): Tensor => {
    this.unetLoRA?.apply();
    return this.model.predictSync({ sample, timestep, encoderHiddenStates: batch.cond as Tensor });
  };

  /** Training mode for what trains (the U-Net always: the Trainer sets it too), eval for the rest. */
  train(): void {
    this.model.unet.train();
    if (this.trainTextEncoder) this.model.textEncoder.train();
    else this.model.textEncoder.eval();
  }

  eval(): void {
    this.model.unet.eval();
    this.model.textEncoder.eval();
  }

  /**
   * After training with an EMA: adapters take their averages in place; wholly trained networks
   * get averaged copies, which {@link write} writes (the model keeps its trained weights).
   */
  useAverages(ema: EMA): void {
    if (!this.parameters) {
      this.averaged.unet = independentCopy(this.model.unet.module, () => false);
      ema.copyTo(this.averaged.unet);
      return;
    }
    const shadow = ema.namedParameters();
    const pick = (prefix: string) => Object.fromEntries(Object.entries(shadow).filter(([n]) => n.startsWith(TEXT_ENCODER_PREFIX) === (prefix !== "")).map(([n, t]) => [n.slice(prefix.length), t]));
    const place = (averages: Record<string, Tensor>, lora: LoRA | null, module: Module): Module | undefined => {
      if (lora) {
        const adapters = lora.parameters();
        noGrad(() => Object.entries(averages).forEach(([name, t]) => adapters[name].copy_(t)));
        return undefined;
      }
      const copy = independentCopy(module, () => false);
      const target = copy.namedParameters() as Record<string, Tensor>;
      noGrad(() => Object.entries(averages).forEach(([name, t]) => target[name].copy_(t)));
      Object.values(target).forEach((t) => t.dispose());
      return copy;
    };
    this.averaged.unet = place(pick(""), this.unetLoRA, this.model.unet.module);
    if (this.trainTextEncoder) this.averaged.textEncoder = place(pick(TEXT_ENCODER_PREFIX), this.textEncoderLoRA, this.model.textEncoder.module);
  }

  /** Writes the trained adapters into the weights, without a graph (inference at full speed). */
  fuse(): void {
    this.unetLoRA?.fuse();
    this.textEncoderLoRA?.fuse();
  }

  /** Puts the base weights back in every adapted layer. */
  unfuse(): void {
    this.unetLoRA?.unfuse();
    this.textEncoderLoRA?.unfuse();
  }

  /**
   * Writes the trained networks into the model directory `out` (`unet/model.pt`, and
   * `text_encoder/model.pt` when it trained; the EMA copies if any), and with LoRA the adapters
   * as `pytorch_lora_weights.safetensors` (the text encoder's behind `text_encoder.`). Call
   * `fuse()` first so the written networks hold the adapters.
   */
  write(out: string): void {
    const unet = this.averaged.unet ?? this.model.unet.module;
    replaceFileAtomic(path.join(out, "unet", "model.pt"), (temp) => unet.save(temp));
    if (this.trainTextEncoder) {
      const textEncoder = this.averaged.textEncoder ?? this.model.textEncoder.module;
      replaceFileAtomic(path.join(out, "text_encoder", "model.pt"), (temp) => textEncoder.save(temp));
    }
    if (this.unetLoRA) saveLoRAWeights(path.join(out, LORA_WEIGHTS_FILE), { unet: this.unetLoRA, text_encoder: this.textEncoderLoRA ?? undefined });
  }

  /** Frees the adapters, parameter handles and EMA copies (the model keeps the weights it holds now). */
  dispose(): void {
    this.unetLoRA?.dispose();
    this.textEncoderLoRA?.dispose();
    for (const p of this.handles) p.dispose();
    this.averaged.unet?.dispose();
    this.averaged.textEncoder?.dispose();
    this.averaged = {};
  }
}
