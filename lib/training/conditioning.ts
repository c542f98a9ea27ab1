/**
 * Conditioning of the denoiser and its dropout for classifier-free guidance (Ho & Salimans
 * 2022, "Classifier-Free Diffusion Guidance", Algorithm 1): a fraction p of each batch is
 * trained with the unconditional input (an empty prompt, a null class label), so one model
 * learns both ε(x, c) and ε(x, ∅).
 */
import { assertInteger, invalid } from "../errors";
import { isTensor, tensor } from "../tensor";
import type { Batch } from "./data";

/**
 * Builds the model's conditioning from a batch. `drop[i]` marks the samples whose condition
 * must be replaced by the unconditional one; `dropDraws[i]` is the uniform draw behind it
 * (drop = draw < conditionDropout), for conditions with several parts dropped in turn
 * (InstructPix2Pix drops text, image or both by ranges of one draw). The result is passed to the forward call: a
 * Tensor or other value as one extra argument, an array as several, undefined as none.
 */
export type Condition = (batch: Batch, drop: boolean[], dropDraws: number[]) => unknown;

/**
 * Class labels as an int64 tensor [B]; dropped samples get `nullLabel` (DiT's extra class).
 * @example condition: labelCondition({ nullLabel: 10 }), conditionDropout: 0.1
 */
export function labelCondition(options: { nullLabel: number }): Condition {
  assertInteger(options?.nullLabel, "labelCondition nullLabel", 0);
  return (batch, drop) => {
    if (!batch.labels) throw new Error("labelCondition: the batch has no labels (the dataset's samples need a numeric label)");
    const labels = batch.labels.map((l, i) => (drop[i] ? options.nullLabel : l));
    return tensor(Float64Array.from(labels), [labels.length], { dtype: "int64" });
  };
}

/**
 * Captions encoded by `encode` (e.g. tokenize + text encoder, or just token ids); dropped
 * samples get `emptyCaption` (default ""), as Stable Diffusion's training does.
 * @example condition: captionCondition((captions) => tokenizer.encodeBatch(captions)), conditionDropout: 0.1
 */
export function captionCondition(encode: (captions: string[]) => unknown, options: { emptyCaption?: string } = {}): Condition {
  if (typeof encode !== "function") throw invalid("function (captions) => conditioning", "captionCondition encode", encode);
  const empty = options.emptyCaption ?? "";
  return (batch, drop) => {
    if (!batch.captions) throw new Error("captionCondition: the batch has no captions (the dataset's samples need a caption)");
    return encode(batch.captions.map((c, i) => (drop[i] ? empty : c)));
  };
}

/** The model-call arguments after (x_t, t) for a condition value. */
export function conditionArgs(cond: unknown): unknown[] {
  if (cond === undefined) return [];
  return Array.isArray(cond) ? cond : [cond];
}

/**
 * Moves the tensors of a condition value to the model's device and casts floating ones to the
 * compute dtype (bf16 under mixed precision), so `condition` can build everything on the CPU.
 */
export function placeCondition(cond: unknown, device: string, floatDtype: "float32" | "bfloat16"): unknown {
  const place = (v: unknown): unknown => {
    if (!isTensor(v)) return v;
    const dtype = /float/.test(v.dtype) ? floatDtype : v.dtype;
    return v.device === device && v.dtype === dtype ? v : v.to({ device, dtype });
  };
  return Array.isArray(cond) ? cond.map(place) : place(cond);
}
