/**
 * Class-conditional sampling (DiT, Peebles & Xie 2023; and any denoiser with its call, such as
 * Simple Diffusion's U-ViT): labels (ids or names from the model's `id2label`) -> images, with
 * classifier-free guidance against the null class, and any scheduler.
 *
 * Learned variance: a model with learned sigma outputs 2C channels, ε then v. DDPMScheduler with
 * `variance_type` "learned_range" (or "learned") samples with that variance (improved DDPM's
 * p_sample); every other scheduler gets the ε half only, as diffusers' DiTPipeline does.
 *
 * Guidance: ε̃ = ε(∅) + s·(ε(y) − ε(∅)) on the ε channels only; the variance channels are the
 * conditional pass's (as in DiT's `forward_with_cfg`). DiT's released code guides only the first
 * three of its four latent channels ("for exact reproducibility"); `guidanceChannels: 3` does
 * that. Our pixel-space models have one ε channel, so guidance covers all of ε — there is nothing
 * to leave out.
 */
import { noGrad } from "../autograd";
import { assertInteger, invalid } from "../errors";
import { ClassifierFreeGuidance } from "../guidance";
import { loadModel, type DiffusionModel, type ModelLoadOptions } from "../models";
import type { DiTTransformer2DModel } from "../models/dit";
import type { Scheduler } from "../schedulers";
import { cat, keep, tensor, tidy, tidyAsync, type Tensor } from "../tensor";
import { callScheduler, modelInput, throwIfAborted, type LoopOptions, type ProgressInfo } from "./common";
import type { PipelineOutput } from "./text2img";
import { drawLatents } from "./text2img";

export interface ClassConditionalOptions extends LoopOptions {
  /** Class ids or names (matched case-insensitively against the model's `id2label`); one image batch entry each. */
  classLabels: number | string | (number | string)[];
  /** Images per label. Default 1. */
  numImagesPerLabel?: number;
  /** Guidance scale on the ε channels; ≤ 1 turns guidance off. Default: the model's, else 4 (diffusers' DiTPipeline). */
  guidanceScale?: number;
  /** How many leading ε channels guidance covers. Default all (C); DiT's released code used 3 of 4. */
  guidanceChannels?: number;
  /** Denoising steps. Default: the model's, else 250 (DiT's DDPM sampling). */
  numInferenceSteps?: number;
  /** The scheduler (class and config) for this call instead of the model's; the call steps a copy. */
  scheduler?: Scheduler;
  /** Starting noise instead of drawing it (B, C, h, w). */
  latents?: Tensor;
  /**
   * DDIM: re-derive ε from the clipped x₀ (diffusers' `use_clipped_model_output`), as improved
   * DDPM's and DiT's `ddim_sample` always do. Default true: with `clip_sample` on (DiT's configs),
   * clipping x₀ but stepping with the raw ε leaves the two inconsistent and the samples noisy.
   */
  useClippedModelOutput?: boolean;
  height?: number;
  width?: number;
}

/** What {@link ClassConditionalPipeline.generate} returns: images and the label id of each. */
export interface ClassConditionalOutput extends PipelineOutput {
  classLabels: number[];
}

/**
 * diffusers' `id2label` ({"7": "Sneaker", "0": "tench, Tinca tinca"}) -> lower-cased name -> id,
 * every comma-separated synonym a name.
 * @example labelNames({ "7": "Sneaker, trainer" }) // { sneaker: 7, trainer: 7 }
 */
export function labelNames(id2label: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  if (id2label === null || typeof id2label !== "object") return out;
  for (const [key, value] of Object.entries(id2label as Record<string, unknown>)) {
    const id = Number(key);
    if (!Number.isInteger(id) || typeof value !== "string") continue;
    for (const name of value.split(",")) {
      const n = name.trim().toLowerCase();
      if (n && !(n in out)) out[n] = id;
    }
  }
  return out;
}

/**
 * Class ids for labels given as ids, digit strings or names of `names` (see {@link labelNames});
 * every id must be below `numClasses`.
 * @example classLabelIds(["sneaker", 3, "7"], labelNames(id2label), 10) // [7, 3, 7]
 */
export function classLabelIds(labels: number | string | (number | string)[], names: Record<string, number>, numClasses: number): number[] {
  const list = Array.isArray(labels) ? labels : [labels];
  if (list.length === 0) throw invalid("a class id or name, or a non-empty array of them", "classLabels", labels);
  return list.map((label) => {
    const id = typeof label === "number" ? label : /^\s*\d+\s*$/.test(label) ? Number(label) : names[label.trim().toLowerCase()];
    if (id === undefined) {
      const known = Object.keys(names);
      throw new Error(`class "${label}" is not one of the model's labels${known.length ? ` (${known.join(", ")})` : " (it has no id2label; give class ids)"}`);
    }
    if (!Number.isInteger(id) || id < 0 || id >= numClasses) throw invalid(`class id in [0, ${numClasses - 1}]`, "classLabels", label);
    return id;
  });
}

/**
 * Classifier-free guidance of a class-conditional prediction over `[unconditional; conditional]`
 * (2B, Cout, H, W): the first `guidanceChannels` channels are guided, the rest (the other ε
 * channels and the variance channels) are the conditional pass's. -> (B, Cout, H, W)
 * @example const out = guideEpsilon(prediction, new ClassifierFreeGuidance(4), 1);
 */
export function guideEpsilon(prediction: Tensor, guider: ClassifierFreeGuidance, guidanceChannels: number): Tensor {
  return tidy(() => {
    const [unconditional, conditional] = prediction.chunk(2, 0); // (B, Cout, H, W) x2
    const channels = conditional.shape[1];
    const guided = guider.combine([unconditional.narrow(1, 0, guidanceChannels), conditional.narrow(1, 0, guidanceChannels)]);
    return guidanceChannels === channels ? guided : cat([guided, conditional.narrow(1, guidanceChannels, channels - guidanceChannels)], 1);
  });
}

/** True when the scheduler samples with the model's variance channels (DDPM, learned or learned_range). @example usesLearnedVariance(model.newScheduler("DDIMScheduler")) // false */
export function usesLearnedVariance(scheduler: Scheduler): boolean {
  const type = (scheduler.config as { variance_type?: string }).variance_type;
  return scheduler.className === "DDPMScheduler" && (type === "learned" || type === "learned_range");
}

/**
 * @example
 * const pipe = ClassConditionalPipeline.fromPretrained("models/builtin-dit");
 * const { images } = await pipe.generate({ classLabels: ["sneaker", 3], numImagesPerLabel: 4, guidanceScale: 1.5, generator: new Generator(0) });
 */
export class ClassConditionalPipeline {
  readonly model: DiffusionModel;
  readonly denoiser: DiTTransformer2DModel;
  /** Lower-cased class names (and synonyms) -> ids, from model_index.json's `id2label`. */
  readonly labels: Record<string, number>;

  constructor(model: DiffusionModel) {
    const denoiser = model.transformer;
    if (!denoiser || denoiser.nullClassLabel === undefined) {
      throw new Error(`ClassConditionalPipeline: the model${model.dir ? ` ${model.dir}` : ""} has no class-conditional transformer (a DiT or U-ViT with a null class); text-conditioned models use Text2ImagePipeline`);
    }
    this.model = model;
    this.denoiser = denoiser;
    this.labels = labelNames(model.modelIndex.id2label);
  }

  static fromPretrained(dir: string, options: ModelLoadOptions = {}): ClassConditionalPipeline {
    return new ClassConditionalPipeline(loadModel(dir, options));
  }

  /** The number of real classes; the null class's id. */
  get numClasses(): number {
    return this.denoiser.nullClassLabel!;
  }

  /** Class ids for ids or names. @example pipe.labelIds(["sneaker", "bag"]) // [7, 8] */
  labelIds(labels: number | string | (number | string)[]): number[] {
    return classLabelIds(labels, this.labels, this.numClasses);
  }

  async generate(options: ClassConditionalOptions): Promise<ClassConditionalOutput> {
    const model = this.model;
    const perLabel = options.numImagesPerLabel ?? 1;
    assertInteger(perLabel, "numImagesPerLabel", 1);
    const ids = this.labelIds(options.classLabels).flatMap((id) => new Array<number>(perLabel).fill(id));
    const steps = options.numInferenceSteps ?? model.defaults.numInferenceSteps ?? 250;
    assertInteger(steps, "numInferenceSteps", 1);
    const shape = model.latentShape(ids.length, { height: options.height, width: options.width }); // (B, C, h, w)
    const channels = shape[1];
    const guidanceChannels = options.guidanceChannels ?? channels;
    assertInteger(guidanceChannels, "guidanceChannels", 1);
    if (guidanceChannels > channels) throw invalid(`integer in [1, ${channels}]`, "guidanceChannels", guidanceChannels);
    const useClippedModelOutput = options.useClippedModelOutput ?? true;
    if (typeof useClippedModelOutput !== "boolean") throw invalid("boolean", "useClippedModelOutput", useClippedModelOutput);
    const guider = new ClassifierFreeGuidance(options.guidanceScale ?? model.defaults.guidanceScale ?? 4);
    const copies = guider.enabled ? 2 : 1;
    model.checkMemory(ids.length * copies, { height: options.height, width: options.width }, "generate");
    throwIfAborted(options.signal);

    const scheduler = callScheduler(model, options.scheduler);
    try {
      scheduler.setTimesteps(steps);
      const learned = usesLearnedVariance(scheduler);
      const labels = guider.enabled ? [...new Array<number>(ids.length).fill(this.numClasses), ...ids] : ids; // [null; y], as the guider's conditions
      const classLabels = tensor(Float64Array.from(labels), [labels.length], { dtype: "int64", device: model.device });
      let latents = options.latents ? options.latents.clone() : drawLatents(shape, scheduler.initNoiseSigma, model.device, options.generator);
      try {
        const timesteps = scheduler.timesteps;
        for (let i = 0; i < timesteps.length; i++) {
          throwIfAborted(options.signal);
          const t = timesteps[i];
          const current = latents;
          const next = await tidyAsync(async () => {
            const prediction = await noGrad(() => model.predict({ sample: modelInput(current, copies, scheduler, t), timestep: t, classLabels }));
            return noGrad(() => {
              let out = guider.enabled ? guideEpsilon(prediction, guider, guidanceChannels) : prediction; // (B, Cout, h, w)
              if (!learned && out.shape[1] === 2 * channels) out = out.narrow(1, 0, channels); // schedulers without learned variance take ε
              return keep(scheduler.step(out, t, current, { generator: options.generator, eta: options.eta, useClippedModelOutput }).prevSample);
            });
          });
          latents.dispose();
          latents = next;
          options.onProgress?.({ step: i + 1, total: timesteps.length, timestep: t, latents } satisfies ProgressInfo);
        }
        const images = await model.latentsToImages(latents);
        return { images, classLabels: ids };
      } finally {
        latents.dispose();
        classLabels.dispose();
      }
    } finally {
      scheduler.dispose();
    }
  }
}
