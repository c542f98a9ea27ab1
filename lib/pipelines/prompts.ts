/**
 * A pipeline call's text conditioning: prompts or precomputed embeddings (an Imagic-style
 * optimized embedding, an interpolation of two), negative prompts, CLIP skip and images per
 * prompt — checked before any work, then encoded into the context the U-Net attends to.
 */
import { assertInteger, invalid } from "../errors";
import { assertTensor, cat, tidy, type Tensor } from "../tensor";
import { noGrad } from "../autograd";
import type { TextToImageModel } from "../models";

export interface PromptOptions {
  /** What to draw: one prompt or one per image batch entry. Omit when `promptEmbeds` is given. */
  prompt?: string | string[];
  /** What to steer away from, one per prompt. Default "" (the unconditional embedding). */
  negativePrompt?: string | string[];
  /** Text-encoder output (B, T, D) to use instead of encoding `prompt`. */
  promptEmbeds?: Tensor;
  /** Instead of encoding `negativePrompt`: (B, T, D) like `promptEmbeds`. */
  negativePromptEmbeds?: Tensor;
  /** Condition on the hidden state this many layers before the last (through the final layer norm), as diffusers' `clip_skip`. Default 0. */
  clipSkip?: number;
  /** Images per prompt. Default 1. */
  numImagesPerPrompt?: number;
}

/** Checked prompt options. */
export interface Prompts {
  /** Prompt texts, or null with `promptEmbeds`. */
  texts: string[] | null;
  negatives: string[];
  /** Number of prompts (B). */
  count: number;
  perPrompt: number;
  clipSkip: number;
}

function textList(value: unknown, name: string): string[] {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === "string")) throw invalid("string or non-empty array of strings", name, value);
  return list;
}

function checkEmbeds(value: unknown, name: string): Tensor {
  assertTensor(value, name);
  const t = value as Tensor;
  if (t.ndim !== 3) throw new Error(`${name}: expected text embeddings (B, T, D) but received shape [${t.shape.join(", ")}]`);
  return t;
}

/**
 * Checks the prompt options of a pipeline call.
 * @example const prompts = checkPrompts(options, "generate");
 */
export function checkPrompts(o: PromptOptions, who: string): Prompts {
  const perPrompt = o.numImagesPerPrompt ?? 1;
  assertInteger(perPrompt, "numImagesPerPrompt", 1);
  const clipSkip = o.clipSkip ?? 0;
  assertInteger(clipSkip, "clipSkip", 0);
  let texts: string[] | null = null;
  let count: number;
  if (o.promptEmbeds !== undefined) {
    if (o.prompt !== undefined) throw new Error(`${who}: give prompt or promptEmbeds, not both`);
    count = checkEmbeds(o.promptEmbeds, "promptEmbeds").shape[0];
  } else {
    if (o.prompt === undefined) throw new Error(`${who}: prompt (or promptEmbeds) is required`);
    texts = textList(o.prompt, "prompt");
    count = texts.length;
  }
  const negatives = o.negativePrompt === undefined ? new Array<string>(count).fill("") : textList(o.negativePrompt, "negativePrompt");
  if (negatives.length !== count) throw new Error(`${who}: ${negatives.length} negative prompts for ${count} prompts`);
  if (o.negativePromptEmbeds !== undefined) {
    const negative = checkEmbeds(o.negativePromptEmbeds, "negativePromptEmbeds");
    if (o.negativePrompt !== undefined) throw new Error(`${who}: give negativePrompt or negativePromptEmbeds, not both`);
    if (negative.shape[0] !== count) throw new Error(`${who}: negativePromptEmbeds has ${negative.shape[0]} entries for ${count} prompts`);
    if (o.promptEmbeds && negative.shape.join() !== o.promptEmbeds.shape.join()) {
      throw new Error(`${who}: negativePromptEmbeds has shape [${negative.shape.join(", ")}] but promptEmbeds has [${o.promptEmbeds.shape.join(", ")}]`);
    }
  }
  return { texts, negatives, count, perPrompt, clipSkip };
}

/**
 * The U-Net's context for checked prompts: [negative (B·n), prompt (B·n)] when guided, else
 * the prompts alone, each prompt repeated for its n images.
 */
export async function promptContext(model: TextToImageModel, o: PromptOptions, prompts: Prompts, guided: boolean): Promise<Tensor> {
  const device = model.unet.device;
  // A handle of our own (to dispose) on the U-Net's device; `to` returns the same handle when nothing changes.
  const given = (t: Tensor) => noGrad(() => (t.device === device ? t.detach() : t.to({ device })));
  const parts: Tensor[] = [];
  try {
    if (guided) parts.push(o.negativePromptEmbeds ? given(o.negativePromptEmbeds) : await model.encodePrompt(prompts.negatives, { clipSkip: prompts.clipSkip }));
    parts.push(prompts.texts ? await model.encodePrompt(prompts.texts, { clipSkip: prompts.clipSkip }) : given(o.promptEmbeds!));
    return noGrad(() =>
      tidy(() => {
        // Given embeddings take the encoder's dtype (the U-Net casts its inputs to its own).
        const dtype = parts[0].dtype;
        const placed = parts.map((p) => (p.device === device && p.dtype === dtype ? p : p.to({ device, dtype })));
        const repeated = prompts.perPrompt > 1 ? placed.map((p) => p.repeatInterleave(prompts.perPrompt, 0)) : placed;
        return repeated.length === 1 ? repeated[0].clone() : cat(repeated, 0); // (copies·B·n, T, D)
      }),
    );
  } finally {
    for (const p of parts) p.dispose();
  }
}
