/**
 * Prompt-to-Prompt (Hertz, Mokady, Tenenbaum, Aberman, Pritch & Cohen-Or, "Prompt-to-Prompt Image
 * Editing with Cross-Attention Control", ICLR 2023): generate an image from a source prompt and,
 * from the same noise, its edit under a target prompt, the target attending to the text through
 * the source's cross-attention maps for the first τ of the steps, so the layout and the unchanged
 * words stay while the changed words change. Word swap, refinement and re-weighting (§3.2) map the
 * maps token by token (guidance/attention_control.ts).
 *
 * 1. The source is Text2ImagePipeline's image for the same prompt, settings and generator, bit for
 *    bit on non-fused exports: the same noise, the same batch layout, the same calls (its U-Net
 *    call goes through `forward_attention_control`, which then computes exactly what `forward` does).
 * 2. The target starts from a copy of the source's initial noise; stochastic schedulers (η > 0,
 *    ancestral samplers) step it with the same noise draws as the source (a copy of the generator's
 *    state after the initial noise): the reference's one seed for both.
 * 3. Steps i < ⌊τ·N⌋ (the reference's `int(cross_replace_steps · num_steps)`; N counts the
 *    scheduler's timesteps, the U-Net calls per image): one controlled U-Net call over the source
 *    batch records every cross-attention layer's probabilities; one over the target batch attends
 *    with `P_source · W + o ⊙ P_target` (W, o per pair, from the token maps). Later steps call the
 *    plain `forward` for both. Self-attention is never injected.
 * 4. Classifier-free guidance: as in the reference implementation (google/prompt-to-prompt, whose
 *    controller diffusers' community `pipeline_prompt2prompt.py` copies), only the text-conditioned
 *    half of the target batch is edited; the unconditional half keeps its own attention (the
 *    reference's controller only rewrites `attn[h // 2:]`, the conditional half, and skips the
 *    unconditional pass in its low-memory mode).
 * 5. Re-weighting acts where the reference's does: on the edited maps during the injection steps
 *    (its `AttentionReweight` is one of the controllers blended in by the step's cross-replace
 *    alpha); after ⌊τ·N⌋ the target attends on its own, so with τ = 0 re-weighting changes nothing.
 *
 * Progress reports (`onProgress`) carry the target's latents.
 *
 * Left out from the reference: self-attention injection (`self_replace_steps`), per-word τ, and
 * local blending (`LocalBlend`).
 */
import { noGrad } from "../autograd";
import { assertInteger, assertNumber, assertOneOf, invalid } from "../errors";
import type { Guider } from "../guidance";
import { crossAttentionEdit, promptWords, reweightScales, type AttentionReweight, type CrossAttentionEditMode } from "../guidance/attention_control";
import { loadModel, type DiffusionModel, type ModelLoadOptions, type TextToImageModel } from "../models";
import { defaultGenerator, Generator } from "../random";
import type { Scheduler } from "../schedulers";
import { cat, keep, ones, tensor, tidy, tidyAsync, zerosLike, type Tensor } from "../tensor";
import { callGuidance, callScheduler, conditionRows, guidedStep, guidesAt, modelInput, throwIfAborted, type LoopOptions } from "./common";
import { checkPrompts, promptContext, type Prompts } from "./prompts";
import { drawLatents } from "./text2img";

/**
 * The options of {@link PromptToPromptPipeline.generate}.
 * @example const options: PromptToPromptOptions = { prompt: "a photo of a shirt", target: "a photo of a dress", crossReplace: 0.8, generator: new Generator(0) };
 */
export interface PromptToPromptOptions extends LoopOptions {
  /** The source prompt(s): one image (per `numImagesPerPrompt`) each, as Text2ImagePipeline draws it. */
  prompt: string | string[];
  /** The edited prompt(s), one per source prompt. */
  target: string | string[];
  /** "replace" (word swap) or "refine" (prompts that add or drop words). Default: "replace" when every pair has as many words, else "refine". */
  mode?: CrossAttentionEditMode;
  /** τ in [0, 1]: the fraction of the steps, from the first, whose cross-attention maps come from the source. Default 0.8. */
  crossReplace?: number;
  /** Scale the target's attention to these words' tokens (during the injection steps). */
  reweight?: AttentionReweight[];
  /** Images per prompt pair (each with its own noise, shared by source and target). Default 1. */
  numImagesPerPrompt?: number;
  /** Classifier-free guidance scale; ≤ 1 disables guidance. Default: the model's, else 7.5. */
  guidanceScale?: number;
  /** Guide only timesteps in [low, high], as Text2ImagePipeline does. Default: the model's, else every step. */
  guidanceInterval?: [number, number];
  /** Denoising steps. Default: the model's, else 50. */
  numInferenceSteps?: number;
  /** What to steer away from, one per prompt pair (for both images). Default "". */
  negativePrompt?: string | string[];
  height?: number;
  width?: number;
  /** The scheduler (class and config) for this call instead of the model's; the call steps copies. */
  scheduler?: Scheduler;
}

/** What {@link PromptToPromptPipeline.generate} returns: two (B, C, H, W) float32 batches in [0, 1], pair i·n + k at index i·n + k. */
export interface PromptToPromptOutput {
  source: Tensor;
  target: Tensor;
}

/** Checked options of one call. */
interface Checked {
  source: Prompts;
  target: Prompts;
  sources: string[];
  targets: string[];
  mode: CrossAttentionEditMode;
  crossReplace: number;
  steps: number;
  reweight: AttentionReweight[];
}

/** Both images' loop state: latents, scheduler, context and the generator their steps draw from. */
interface Side {
  latents: Tensor;
  scheduler: Scheduler;
  context: Tensor;
  generator?: Generator;
}

/** Per-call edit tensors: the target batch's `P_target ← P_source · weights + ownWeight ⊙ P_target`. */
interface EditTensors {
  /** (N, 1, T, T), N = prompt pairs × images per pair. */
  weights: Tensor;
  /** (copies·N, 1, 1, T): 1 for unconditional rows, the edit's own weights for the conditional ones. */
  ownWeight: Tensor;
}

/**
 * @example
 * const pipe = PromptToPromptPipeline.fromPretrained("builtin");
 * const { source, target } = await pipe.generate({ prompt: "a photo of a shirt", target: "a photo of a dress", generator: new Generator(0) });
 * await writeImage(imageGrid(cat([source, target], 0)), "pair.png");
 */
export class PromptToPromptPipeline {
  readonly model: TextToImageModel;

  constructor(model: DiffusionModel) {
    this.model = model.requireTextToImage("PromptToPromptPipeline");
    if (!this.model.unet.hasAttentionControl) {
      const dir = this.model.dir ? `${this.model.dir}'s U-Net` : "this U-Net";
      throw new Error(`PromptToPromptPipeline: ${dir} was exported without forward_attention_control (exports before prompt-to-prompt support): re-export it with torch-diffusion convert --from <diffusers folder> --to DIR`);
    }
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): PromptToPromptPipeline {
    const model = loadModel(dir, options);
    try {
      return new PromptToPromptPipeline(model);
    } catch (error) {
      model.dispose();
      throw error;
    }
  }

  /**
   * A source image and its edit per prompt pair (see the file header).
   * @example const { source, target } = await pipe.generate({ prompt: ["a photo of a shirt"], target: ["a photo of a red shirt"], mode: "refine", crossReplace: 0.6 });
   */
  async generate(options: PromptToPromptOptions): Promise<PromptToPromptOutput> {
    const model = this.model;
    const o = checkOptions(model, options);
    const guider = callGuidance(model, { guidanceScale: options.guidanceScale, guidanceInterval: options.guidanceInterval });
    const copies = guider.enabled ? guider.conditions.length : 1;
    const size = { height: options.height, width: options.width };
    const shape = model.latentShape(o.source.count * o.source.perPrompt, size); // (N, C, h, w)
    // Two batches' activations one after the other, plus the recorded maps and their edits.
    model.checkMemory(shape[0] * copies, size, "generate", 1.5);
    throwIfAborted(options.signal);

    const schedulers = [callScheduler(model, options.scheduler), callScheduler(model, options.scheduler)];
    const sides: Side[] = []; // their latents are the loop's (kept past its scopes): freed here
    try {
      return await tidyAsync(async () => {
        for (const s of schedulers) s.setTimesteps(o.steps);
        const promptOptions = { negativePrompt: options.negativePrompt, numImagesPerPrompt: options.numImagesPerPrompt };
        const source: Side = {
          scheduler: schedulers[0],
          context: await promptContext(model, { prompt: o.sources, ...promptOptions }, o.source, guider.enabled), // (copies·N, T, D)
          latents: drawLatents(shape, schedulers[0].initNoiseSigma, model.device, options.generator), // (N, C, h, w)
          generator: options.generator,
        };
        const target: Side = {
          scheduler: schedulers[1],
          context: await promptContext(model, { prompt: o.targets, ...promptOptions }, o.target, guider.enabled),
          latents: source.latents.clone(),
          generator: generatorCopy(options.generator ?? defaultGenerator),
        };
        sides.push(source, target);
        const edits = this.editTensors(o, copies);
        await this.loop(o, guider.enabled ? guider : null, source, target, edits, options);
        return { source: await model.latentsToImages(source.latents), target: await model.latentsToImages(target.latents) };
      });
    } finally {
      for (const s of schedulers) s.dispose();
      for (const side of sides) side.latents.dispose();
    }
  }

  /** The sampling loop of both images (the file header's steps 3-4); leaves the final latents in the sides. */
  private async loop(o: Checked, guider: Guider | null, source: Side, target: Side, edits: EditTensors, options: PromptToPromptOptions): Promise<void> {
    const model = this.model;
    const unet = model.unet;
    const copies = guider ? guider.conditions.length : 1;
    const timesteps = source.scheduler.timesteps;
    const injectSteps = Math.floor(o.crossReplace * timesteps.length); // U-Net calls, as the reference counts (Heun's are 2N - 1)
    for (let i = 0; i < timesteps.length; i++) {
      throwIfAborted(options.signal);
      const t = timesteps[i];
      // Outside the guidance interval both sides run their conditional rows alone, as text2img does.
      const guided = guidesAt(guider, t);
      const stepCopies = guided ? copies : 1;
      const rows = (x: Tensor) => conditionRows(x, guider, guided, source.latents.shape[0]);
      const [sourceNext, targetNext] = await tidyAsync(async () => {
        const sourceInput = noGrad(() => modelInput(source.latents, stepCopies, source.scheduler, t)); // (stepCopies·N, C, h, w)
        const targetInput = noGrad(() => modelInput(target.latents, stepCopies, target.scheduler, t));
        const [sourceContext, targetContext, ownWeight] = noGrad(() => [rows(source.context), rows(target.context), rows(edits.ownWeight)]);
        let sourcePrediction: Tensor;
        let targetPrediction: Tensor;
        if (i < injectSteps) {
          const recorded = await noGrad(() => unet.forwardAttentionControl({ sample: sourceInput, timestep: t, encoderHiddenStates: sourceContext }));
          sourcePrediction = recorded.sample;
          const replacements = noGrad(() => recorded.attentionProbs.map((probs) => injectedMaps(probs, edits.weights, stepCopies)));
          const edited = await noGrad(() =>
            unet.forwardAttentionControl({ sample: targetInput, timestep: t, encoderHiddenStates: targetContext, replacements, ownWeight }),
          );
          targetPrediction = edited.sample;
        } else {
          sourcePrediction = await noGrad(() => model.predict({ sample: sourceInput, timestep: t, encoderHiddenStates: sourceContext }));
          targetPrediction = await noGrad(() => model.predict({ sample: targetInput, timestep: t, encoderHiddenStates: targetContext }));
        }
        return noGrad(() => [
          keep(guidedStep(sourcePrediction, guided ? guider : null, source.scheduler, t, source.latents, { generator: source.generator, eta: options.eta })),
          keep(guidedStep(targetPrediction, guided ? guider : null, target.scheduler, t, target.latents, { generator: target.generator, eta: options.eta })),
        ]);
      });
      source.latents.dispose();
      target.latents.dispose();
      [source.latents, target.latents] = [sourceNext, targetNext];
      options.onProgress?.({ step: i + 1, total: timesteps.length, timestep: t, latents: target.latents });
    }
  }

  /** Each pair's token maps as tensors on the U-Net's device, repeated for the pair's images. */
  private editTensors(o: Checked, copies: number): EditTensors {
    const { tokenizer, unet } = this.model;
    const length = tokenizer.modelMaxLength;
    const n = o.source.perPrompt;
    const pairs = o.sources.map((source, i) => {
      const { scales } = reweightScales(tokenizer, o.targets[i], o.reweight, length);
      return crossAttentionEdit(tokenizer, source, o.targets[i], { mode: o.mode, scales, maxLength: length });
    });
    const device = unet.device;
    return tidy(() => {
      const weights = tensor(concat(pairs.map((p) => p.weights)), [pairs.length, 1, length, length], { device }).repeatInterleave(n, 0); // (N, 1, T, T)
      const own = tensor(concat(pairs.map((p) => p.ownWeight)), [pairs.length, 1, 1, length], { device }).repeatInterleave(n, 0); // (N, 1, 1, T)
      const ownWeight = copies > 1 ? cat([ones(own.shape, { device }), own], 0) : own; // (copies·N, 1, 1, T)
      return { weights, ownWeight };
    });
  }
}

/**
 * One layer's replacement for the target batch from the source's recorded probabilities
 * (copies·N, heads, HW, T): the conditional rows mapped through each pair's `weights`; with guidance
 * the unconditional rows are zeros (with own weight 1 they keep their own attention).
 */
function injectedMaps(probs: Tensor, weights: Tensor, copies: number): Tensor {
  const n = weights.shape[0];
  const conditional = copies > 1 ? probs.narrow(0, (copies - 1) * n, n) : probs; // (N, heads, HW, T)
  const injected = conditional.matmul(weights); // (N, heads, HW, T)
  return copies > 1 ? cat([zerosLike(injected), injected], 0) : injected; // (copies·N, heads, HW, T)
}

/** A generator continuing where `generator` is: the target's steps draw what the source's draw. */
function generatorCopy(generator: Generator): Generator {
  const copy = new Generator(undefined, generator.device);
  const state = generator.getState();
  try {
    copy.setState(state);
  } finally {
    state.dispose();
  }
  return copy;
}

function concat(arrays: Float32Array[]): Float32Array {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.length;
  }
  return out;
}

function textList(value: unknown, name: string): string[] {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === "string")) throw invalid("string or non-empty array of strings", name, value);
  return list;
}

/** Checks a call's options before any work; errors name the option. */
function checkOptions(model: TextToImageModel, options: PromptToPromptOptions): Checked {
  const who = "generate";
  if (options === null || typeof options !== "object") throw invalid("options object", `${who} options`, options);
  const sources = textList(options.prompt, "prompt");
  const targets = textList(options.target, "target");
  if (sources.length !== targets.length) {
    throw new Error(`${who}: ${sources.length} prompts but ${targets.length} targets: give one target per prompt`);
  }
  const source = checkPrompts({ prompt: sources, negativePrompt: options.negativePrompt, numImagesPerPrompt: options.numImagesPerPrompt }, who);
  const target = checkPrompts({ prompt: targets, negativePrompt: options.negativePrompt, numImagesPerPrompt: options.numImagesPerPrompt }, who);
  const sameWords = sources.every((s, i) => promptWords(s).length === promptWords(targets[i]).length);
  const mode = options.mode ?? (sameWords ? "replace" : "refine");
  assertOneOf(mode, ["replace", "refine"], "mode");
  const crossReplace = options.crossReplace ?? 0.8;
  assertNumber(crossReplace, "crossReplace");
  if (!(crossReplace >= 0 && crossReplace <= 1)) throw invalid("number in [0, 1]", "crossReplace", crossReplace);
  const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 50;
  assertInteger(steps, "numInferenceSteps", 1);
  const reweight = checkReweight(model, options.reweight, targets);
  if (mode === "replace") {
    // The word-swap map needs word-for-word pairs: fail here, naming the pair, rather than mid-call.
    const bad = sources.findIndex((s, i) => promptWords(s).length !== promptWords(targets[i]).length);
    if (bad >= 0) {
      throw new Error(`${who}: mode "replace" (word swap) needs prompts with the same number of words, but pair ${bad} is ${JSON.stringify(sources[bad])} → ${JSON.stringify(targets[bad])}: use mode "refine"`);
    }
  }
  return { source, target, sources, targets, mode, crossReplace, steps, reweight };
}

function checkReweight(model: TextToImageModel, value: unknown, targets: string[]): AttentionReweight[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalid("array of { word, scale }", "reweight", value);
  const reweight = value.map((entry, k) => {
    const { word, scale } = (entry ?? {}) as Partial<AttentionReweight>;
    if (typeof word !== "string" || !/[\p{L}\p{N}]/u.test(word) || /\s/.test(word.trim())) throw invalid("one word (letters or digits, no spaces)", `reweight[${k}].word`, word);
    assertNumber(scale, `reweight[${k}].scale`);
    if (!Number.isFinite(scale)) throw invalid("finite number", `reweight[${k}].scale`, scale);
    return { word: word.trim(), scale };
  });
  const found = reweight.map(() => false);
  for (const text of targets) reweightScales(model.tokenizer, text, reweight).found.forEach((f, k) => (found[k] ||= f));
  const missing = reweight.filter((_, k) => !found[k]).map((r) => JSON.stringify(r.word));
  if (missing.length > 0) {
    throw new Error(`generate: reweight word ${missing.join(", ")} is not a word of ${targets.length === 1 ? `the target ${JSON.stringify(targets[0])}` : "any target prompt"}`);
  }
  return reweight;
}
