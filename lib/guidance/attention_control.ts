/**
 * Prompt-to-Prompt's token bookkeeping (Hertz, Mokady, Tenenbaum, Aberman, Pritch & Cohen-Or,
 * "Prompt-to-Prompt Image Editing with Cross-Attention Control", ICLR 2023, §3.2): which token
 * of the source prompt each token of the target prompt takes its cross-attention map from.
 * Pure functions over the tokenizer; the pipeline (pipelines/prompt_to_prompt.ts) turns them into
 * tensors. Token positions count `<|startoftext|>` as 0 and run to the encoder's `maxLength`.
 *
 * Every edit is one T × T matrix W and one length-T vector o per (source, target) pair: the target's
 * cross-attention probabilities become `P_source · W + o ⊙ P_target` (columns = target tokens):
 *
 * - Word swap (`"replace"`, the paper's M*_t := M_t): W is the reference implementation's
 *   `get_replacement_mapper` (google/prompt-to-prompt `seq_aligner.py`): identity on unchanged
 *   words; a swapped word whose token count stays maps token to token; one whose count changes
 *   spreads its source tokens evenly, each of its n target tokens getting 1/n of every source
 *   token's map (the word's total attention is kept). o = 0. One deliberate difference: after the
 *   last swapped word the reference maps target token j from source token j (`mapper[j, j]`),
 *   which is off by the count change when the last swapped word changed its token count; here the
 *   rest of the prompt maps source i → target j in step.
 * - Refinement (`"refine"`, prompts that add or drop words): the reference's `get_refinement_mapper`:
 *   a global alignment of the two token-id sequences (gap 0, match 1, mismatch −1; on ties a gap in
 *   the source first, then a gap in the target, then a match), so each target token aligned to a
 *   source token takes that token's map and every other target token keeps its own (o = 1 there);
 *   padding past the target's end maps position to position.
 * - Re-weighting (the reference's `AttentionReweight` / `get_equalizer`): the target's columns of
 *   the given words' tokens, of W and of o alike, times the word's scale.
 */
import { invalid } from "../errors";
import type { CLIPTokenizer } from "../tokenizers";

/** Token positions of one whitespace-separated word of a prompt: [start, end), `<|startoftext|>` at 0. */
export interface WordTokens {
  word: string;
  start: number;
  end: number;
}

/** The two edits of §3.2 that map tokens: word swap and refinement. */
export type CrossAttentionEditMode = "replace" | "refine";

/** One word's re-weighting: its tokens' attention in the target times `scale` (the paper uses c ∈ [−2, 2]). */
export interface AttentionReweight {
  word: string;
  scale: number;
}

/**
 * One pair's edit of the target's cross-attention: `P_target ← P_source · weights + ownWeight ⊙ P_target`.
 * @example const { weights, ownWeight } = crossAttentionEdit(tokenizer, "a photo of a shirt", "a photo of a dress");
 */
export interface CrossAttentionEdit {
  /** T × T row-major (row = source token, column = target token). */
  weights: Float32Array;
  /** T: how much of its own attention each target token keeps. */
  ownWeight: Float32Array;
  /** T, the encoder's token count. */
  length: number;
}

/** A prompt's words as the reference splits them (on whitespace). @example promptWords(" a  red shirt") // ["a", "red", "shirt"] */
export function promptWords(text: string): string[] {
  return text.trim().split(/\s+/).filter((w) => w !== "");
}

/**
 * Which tokens each word of `text` became, as CLIP tokenizes (each word on its own: CLIP's BPE never
 * merges across whitespace). Words past the encoder's `maxLength` are cut as `encode` truncates.
 * @example wordTokens(tokenizer, "a photo of a hippopotamus") // [..., { word: "hippopotamus", start: 5, end: 8 }] when it is 3 tokens
 */
export function wordTokens(tokenizer: CLIPTokenizer, text: string, maxLength = tokenizer.modelMaxLength): WordTokens[] {
  if (typeof text !== "string") throw invalid("string", "prompt", text);
  const last = maxLength - 1; // <|endoftext|> keeps the last position of a truncated prompt
  let position = 1;
  const out = promptWords(text).map((word) => {
    const count = tokenizer.tokenize(word).length;
    const span = { word, start: Math.min(position, last), end: Math.min(position + count, last) };
    position += count;
    return span;
  });
  const whole = tokenizer.tokenize(text).length;
  if (whole !== position - 1) {
    throw new Error(`prompt-to-prompt: cannot align the words of ${JSON.stringify(text)} with its tokens (${position - 1} tokens word by word, ${whole} as a whole)`);
  }
  return out;
}

/** The token ids of `text` with `<|startoftext|>` and `<|endoftext|>`, truncated, unpadded. */
function tokenIds(tokenizer: CLIPTokenizer, text: string, maxLength: number): number[] {
  return tokenizer.encode(text, { maxLength, padding: "none" }).inputIds[0];
}

/**
 * Word swap's token map (see the file header): T × T row-major, row = source token, column = target token.
 * Throws when the prompts differ in word count (word swap needs word-for-word prompts).
 * @example
 * const w = wordSwapMapper(tokenizer, "a photo of a cat", "a photo of a dog");
 * w[5 * 77 + 5] // 1: the target's "dog" takes the source's "cat" map
 */
export function wordSwapMapper(tokenizer: CLIPTokenizer, source: string, target: string, maxLength = tokenizer.modelMaxLength): Float32Array {
  const from = wordTokens(tokenizer, source, maxLength);
  const to = wordTokens(tokenizer, target, maxLength);
  if (from.length !== to.length) {
    throw new Error(`word swap needs prompts with the same number of words, but ${JSON.stringify(source)} has ${from.length} and ${JSON.stringify(target)} has ${to.length} (mode "refine" aligns prompts that add or drop words)`);
  }
  const mapper = new Float32Array(maxLength * maxLength);
  const set = (i: number, j: number, value: number) => {
    if (i < maxLength && j < maxLength) mapper[i * maxLength + j] = value;
  };
  set(0, 0, 1); // <|startoftext|>
  for (const [k, s] of from.entries()) {
    const t = to[k];
    const [sourceCount, targetCount] = [s.end - s.start, t.end - t.start];
    if (sourceCount === targetCount) {
      for (let m = 0; m < sourceCount; m++) set(s.start + m, t.start + m, 1);
    } else {
      for (let j = t.start; j < t.end; j++) for (let i = s.start; i < s.end; i++) set(i, j, 1 / targetCount);
    }
  }
  // <|endoftext|> and the padding after it, in step.
  const tail = (spans: WordTokens[]) => (spans.length > 0 ? spans[spans.length - 1].end : 1);
  for (let i = tail(from), j = tail(to); i < maxLength && j < maxLength; i++, j++) set(i, j, 1);
  return mapper;
}

/**
 * Refinement's alignment (see the file header): for each target token the source token it takes its
 * map from (-1: none, it keeps its own), and alpha 1 where aligned, 0 where not.
 * @example
 * const { mapper, alphas } = refinementAlignment(tokenizer, "a photo of a shirt", "a photo of a red shirt");
 * // mapper [0, 1, 2, 3, 4, -1, 5, 6, 7, 8, ...], alphas [1, 1, 1, 1, 1, 0, 1, ...]
 */
export function refinementAlignment(tokenizer: CLIPTokenizer, source: string, target: string, maxLength = tokenizer.modelMaxLength): { mapper: Int32Array; alphas: Float32Array } {
  const x = tokenIds(tokenizer, source, maxLength);
  const y = tokenIds(tokenizer, target, maxLength);
  const aligned = alignTokens(x, y);
  const mapper = new Int32Array(maxLength);
  const alphas = new Float32Array(maxLength);
  for (let j = 0; j < maxLength; j++) {
    mapper[j] = j < y.length ? aligned[j] : j;
    alphas[j] = mapper[j] >= 0 ? 1 : 0;
  }
  return { mapper, alphas };
}

/**
 * Global alignment of two id sequences (Needleman–Wunsch with gap 0, match 1, mismatch −1, as the
 * reference's `global_align`): for each position of `y` the aligned position of `x`, or -1.
 */
function alignTokens(x: number[], y: number[]): number[] {
  const [gap, match, mismatch] = [0, 1, -1];
  const cols = y.length + 1;
  const score = new Int32Array((x.length + 1) * cols);
  const trace = new Uint8Array((x.length + 1) * cols); // 1 left (gap in x), 2 up (gap in y), 3 diagonal
  for (let j = 1; j <= y.length; j++) [score[j], trace[j]] = [j * gap, 1];
  for (let i = 1; i <= x.length; i++) [score[i * cols], trace[i * cols]] = [i * gap, 2];
  for (let i = 1; i <= x.length; i++) {
    for (let j = 1; j <= y.length; j++) {
      const left = score[i * cols + j - 1] + gap;
      const up = score[(i - 1) * cols + j] + gap;
      const diagonal = score[(i - 1) * cols + j - 1] + (x[i - 1] === y[j - 1] ? match : mismatch);
      const best = Math.max(left, up, diagonal);
      score[i * cols + j] = best;
      trace[i * cols + j] = best === left ? 1 : best === up ? 2 : 3;
    }
  }
  const out = new Array<number>(y.length).fill(-1);
  for (let i = x.length, j = y.length; i > 0 || j > 0; ) {
    const step = trace[i * cols + j];
    if (step === 3) out[--j] = --i;
    else if (step === 1) j--;
    else i--;
  }
  return out;
}

/**
 * Re-weighting scales for `text`'s tokens: 1 everywhere but the tokens of the given words (matched
 * case-insensitively; punctuation around a prompt's word, "shirt," or "(shirt)", is neither matched
 * nor scaled). `found[k]` says whether `reweight[k].word` occurs in `text`.
 * @example reweightScales(tokenizer, "a photo of a red shirt", [{ word: "red", scale: 2 }]).scales[5] // 2
 */
export function reweightScales(tokenizer: CLIPTokenizer, text: string, reweight: readonly AttentionReweight[], maxLength = tokenizer.modelMaxLength): { scales: Float32Array; found: boolean[] } {
  const scales = new Float32Array(maxLength).fill(1);
  const words = wordTokens(tokenizer, text, maxLength);
  const found = reweight.map(({ word, scale }) => {
    const wanted = splitPunctuation(word).core.toLowerCase();
    let hits = 0;
    for (const span of words) {
      const { lead, core } = splitPunctuation(span.word);
      if (core.toLowerCase() !== wanted) continue;
      const start = Math.min(span.start + tokenizer.tokenize(lead).length, span.end);
      scales.fill(scale, start, Math.min(start + tokenizer.tokenize(core).length, span.end));
      hits++;
    }
    return hits > 0;
  });
  return { scales, found };
}

/** A word without the punctuation around it ("(Dress," -> lead "(", core "Dress"); CLIP tokenizes punctuation apart. */
function splitPunctuation(word: string): { lead: string; core: string } {
  const match = /^([^\p{L}\p{N}]*)(.*?)[^\p{L}\p{N}]*$/u.exec(word)!;
  return { lead: match[1], core: match[2] };
}

/**
 * One (source, target) pair's edit of the target's cross-attention (see the file header), with the
 * re-weighting scales of the target's tokens folded in.
 * @example const edit = crossAttentionEdit(tokenizer, "a photo of a shirt", "a photo of a red shirt", { mode: "refine" });
 */
export function crossAttentionEdit(
  tokenizer: CLIPTokenizer,
  source: string,
  target: string,
  options: { mode: CrossAttentionEditMode; scales?: Float32Array; maxLength?: number },
): CrossAttentionEdit {
  const length = options.maxLength ?? tokenizer.modelMaxLength;
  const scales = options.scales ?? new Float32Array(length).fill(1);
  let weights: Float32Array;
  const ownWeight = new Float32Array(length);
  if (options.mode === "replace") {
    weights = wordSwapMapper(tokenizer, source, target, length);
  } else {
    const { mapper, alphas } = refinementAlignment(tokenizer, source, target, length);
    weights = new Float32Array(length * length);
    for (let j = 0; j < length; j++) {
      if (mapper[j] >= 0) weights[mapper[j] * length + j] = alphas[j];
      ownWeight[j] = 1 - alphas[j];
    }
  }
  for (let j = 0; j < length; j++) {
    if (scales[j] === 1) continue;
    for (let i = 0; i < length; i++) weights[i * length + j] *= scales[j];
    ownWeight[j] *= scales[j];
  }
  return { weights, ownWeight, length };
}
