/**
 * Shared machinery of all schedulers: the validated config, timestep bookkeeping (diffusers'
 * `step_index` / `begin_index`), `clone()`, noise draws, clipping and dynamic thresholding,
 * the DDPM-parameterisation conversions of the model output (x₀, ε) and the three forward
 * (noising) processes: alphas_cumprod (DDPM family), sigma (Karras/EDM family) and
 * alpha_t/sigma_t from sigmas (DPM-Solver family).
 *
 * Tensor lifetime: every tensor a method returns is new and owned by the caller; tensors a
 * scheduler keeps between steps (multistep history) are held with `keep` and released when
 * replaced, on `setTimesteps` and on `dispose()`.
 */
import { Tensor, Generator, randn, tensor, tidy } from "../tensor";
import { Spec, invalid, resolveConfig } from "./config";
import { f32, sqrt32, div32, mul32, add32 } from "./f32";
import { NoiseSchedule, noiseSchedule, NoiseScheduleConfig } from "./schedules";

/** Options of `step()`; each scheduler reads the ones its algorithm uses. */
export interface StepOptions {
  /** Random source for stochastic steps (`torch.Generator` equivalent). */
  generator?: Generator | null;
  /** Used verbatim as the step's random draw instead of sampling from `generator`. */
  noise?: Tensor | null;
  /** DDIM η / TCD γ: weight of the injected noise. */
  eta?: number;
  /** DDIM: re-derive ε from the clipped x₀. */
  useClippedModelOutput?: boolean;
  /** Euler churn (Karras et al. 2022, Algorithm 2). */
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
}

/** Result of `step()`: the previous sample x_{t-1} and, where diffusers returns one, x₀. */
export interface StepOutput {
  prevSample: Tensor;
  predOriginalSample: Tensor | null;
}

/** Options of `setTimesteps()`; each scheduler reads the ones it supports. */
export interface SetTimestepsOptions {
  /** Resolution-dependent shift (flow matching, `use_dynamic_shifting`). */
  mu?: number;
  /** Custom timesteps instead of `numInferenceSteps` spacing. */
  timesteps?: number[];
  /** Custom sigmas (flow matching). */
  sigmas?: number[];
  /** LCM/TCD: distillation schedule length override. */
  originalInferenceSteps?: number;
  /** LCM/TCD: img2img strength. */
  strength?: number;
}

/** A timestep as passed to `step`: a number from `scheduler.timesteps`, or a 0-d tensor. */
export type TimestepLike = number | Tensor;

/** Timesteps for `addNoise`: one per batch element (or one for all). */
export type TimestepsLike = number | number[] | Tensor;

/** diffusers' model parameterisations. */
export const PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"] as const;

/** Converts a timestep argument to a number. @example timestepValue(999) // 999 */
export const timestepValue = (t: TimestepLike): number => (typeof t === "number" ? t : t.item());

/** Converts `addNoise` timesteps to a list of numbers. @example timestepList(500) // [500] */
export function timestepList(ts: TimestepsLike): number[] {
  if (typeof ts === "number") return [ts];
  if (Array.isArray(ts)) return ts;
  return Array.from(ts.toFloat64Array());
}

/**
 * A `[k, 1, 1, ...]` float tensor of per-sample scalars that broadcasts against `like`.
 * @example perSample([0.9, 0.5], latents).mul(latents) // scales sample 0 by 0.9, sample 1 by 0.5
 */
export function perSample(values: number[], like: Tensor): Tensor {
  const shape = [values.length, ...new Array(Math.max(0, like.ndim - 1)).fill(1)];
  const t = tensor(values, shape, { dtype: "float32", device: like.device });
  return like.dtype === "float32" ? t : t.to(like.dtype);
}

/**
 * Base class: config, timesteps, step index, noise and thresholding helpers.
 * @example
 * const s: SchedulerBase = schedulerFromConfig(config);
 * s.setTimesteps(30);
 * for (const t of s.timesteps) x = s.step(model(s.scaleModelInput(x, t), t), t, x).prevSample;
 */
export abstract class SchedulerBase<C extends object = Record<string, unknown>> {
  /** The resolved config (diffusers' `scheduler.config`), frozen, snake_case. */
  readonly config: Readonly<C>;
  /** Timesteps of the sampling loop after `setTimesteps` (ints or float32 values). */
  timesteps: number[] = [];
  /** Noise levels where the family has them (one more than `timesteps`), else null. */
  sigmas: number[] | null = null;
  numInferenceSteps: number | null = null;
  /** Model evaluations per `step` of the underlying solver (2 for Heun/KDPM2 pairs). */
  readonly order: number = 1;
  protected _stepIndex: number | null = null;
  protected _beginIndex: number | null = null;

  protected constructor(
    readonly className: string,
    spec: Spec,
    config: unknown,
    fixup?: (c: Record<string, unknown>) => void,
  ) {
    const resolved = resolveConfig<Record<string, unknown>>(className, spec, config);
    fixup?.(resolved);
    this.config = Object.freeze(resolved) as unknown as Readonly<C>;
  }

  /** Standard deviation of the initial noise: multiply `randn` latents by this. */
  get initNoiseSigma(): number {
    return 1;
  }

  /** Index of the next `step` in `timesteps` (null before the first step). */
  get stepIndex(): number | null {
    return this._stepIndex;
  }

  get beginIndex(): number | null {
    return this._beginIndex;
  }

  /** Start stepping at `timesteps[beginIndex]` (img2img pipelines), as diffusers' `set_begin_index`. */
  setBeginIndex(beginIndex = 0): void {
    this._beginIndex = beginIndex;
  }

  /** Computes `timesteps` (and `sigmas`) for `numInferenceSteps` and resets multistep state. */
  abstract setTimesteps(numInferenceSteps: number, opts?: SetTimestepsOptions): void;

  /** One reverse-diffusion step from `sample` at timestep `t` given the model's output. */
  abstract step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts?: StepOptions): StepOutput;

  /** Forward process: noises `original` to the given timesteps. */
  abstract addNoise(original: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor;

  /** Scales the model input for timestep `t`; a copy of `sample` where no scaling is needed. */
  scaleModelInput(sample: Tensor, _t?: TimestepLike): Tensor {
    return sample.clone();
  }

  /** Releases tensors held between steps. The scheduler stays usable. */
  dispose(): void {
    this.resetState();
  }

  /**
   * A fresh scheduler of the same class and config, as just constructed: no timesteps set, no
   * step index and no multistep history. Schedulers keep per-run state (step index, model-output
   * history), so each concurrent sampling run needs its own instance; rebuilding from the
   * resolved config is cheaper and safer than copying that state. Settings made outside the
   * config (FlowMatch `setShift`, a μ given to an earlier `setTimesteps`) do not carry over.
   * @example
   * const run = pipelineScheduler.clone();
   * run.setTimesteps(30); // pipelineScheduler is untouched
   */
  clone(): this {
    const Ctor = this.constructor as new (config: Record<string, unknown>) => this;
    return new Ctor({ ...(this.config as Record<string, unknown>) });
  }

  /** Hook: drop multistep history (called by `setTimesteps` and `dispose`). */
  protected resetState(): void {}

  protected stepsArgument(n: number): number {
    if (!Number.isInteger(n) || n < 1) throw invalid(this.className, "setTimesteps: numInferenceSteps", "an integer >= 1", n);
    return n;
  }

  protected requireTimesteps(): void {
    if (this.numInferenceSteps === null)
      throw new Error(`${this.className}: call setTimesteps(numInferenceSteps) before step()`);
  }

  /**
   * diffusers' `index_for_timestep`: the position of `t` in `schedule`, taking the second match
   * when a timestep repeats (so a schedule started midway does not skip a sigma).
   */
  protected indexForTimestep(t: number, schedule: number[] = this.timesteps, fallbackToLast = false): number {
    const hits: number[] = [];
    const t32 = Math.fround(t); // a float32 schedule compares in float32, as torch does
    for (let i = 0; i < schedule.length; i++) if (schedule[i] === t || schedule[i] === t32) hits.push(i);
    if (hits.length === 0) {
      if (fallbackToLast) return this.timesteps.length - 1;
      throw invalid(this.className, "timestep", `one of scheduler.timesteps`, t);
    }
    return hits.length > 1 ? hits[1] : hits[0];
  }

  protected initStepIndex(t: TimestepLike, fallbackToLast = false): number {
    if (this._stepIndex === null) {
      this._stepIndex = this._beginIndex ?? this.indexForTimestep(timestepValue(t), this.timesteps, fallbackToLast);
    }
    return this._stepIndex;
  }

  /** Indices of `addNoise` timesteps: by lookup, or the current/begin index inside a pipeline. */
  protected noiseIndices(ts: number[], fallbackToLast = false): number[] {
    if (this._beginIndex === null) return ts.map((t) => this.indexForTimestep(t, this.timesteps, fallbackToLast));
    const i = this._stepIndex ?? this._beginIndex;
    return ts.map(() => i);
  }

  /** The step's random draw: `opts.noise` verbatim, else `randn` from `opts.generator`. */
  protected noiseLike(like: Tensor, opts: StepOptions): Tensor {
    if (opts.noise) {
      const n = opts.noise;
      if (n.shape.length !== like.shape.length || n.shape.some((d, i) => d !== like.shape[i]))
        throw invalid(this.className, "step: noise", `a tensor of shape [${like.shape}]`, `shape [${n.shape}]`);
      return n.dtype === like.dtype && n.device === like.device ? n : n.to({ dtype: like.dtype, device: like.device });
    }
    const draw = randn(like.shape, { generator: opts.generator ?? undefined, dtype: like.dtype });
    return like.device === "cpu" ? draw : draw.to(like.device);
  }

  /**
   * Imagen's dynamic thresholding (Saharia et al. 2022, §2.3): per sample, s = the
   * `dynamic_thresholding_ratio` quantile of |x₀|, clamped to [1, sample_max_value];
   * x₀ ← clamp(x₀, -s, s) / s.
   */
  protected thresholdSample(x0: Tensor): Tensor {
    const c = this.config as unknown as ThresholdConfig;
    return tidy(() => {
      const [b, ch, ...rest] = x0.shape;
      const up = x0.dtype === "float32" || x0.dtype === "float64" ? x0 : x0.float();
      const flat = up.reshape([b, ch * rest.reduce((a, d) => a * d, 1)]); // (B, C·H·W)
      const s = flat.abs().quantile(c.dynamic_thresholding_ratio, 1).clamp(1, c.sample_max_value).unsqueeze(1); // (B, 1)
      const out = flat.maximum(s.neg()).minimum(s).div(s).reshape(x0.shape);
      return out.dtype === x0.dtype ? out : out.to(x0.dtype);
    });
  }
}

/** The keys of `clipSpec`: clip x₀ to ±`clip_sample_range`. */
export interface ClipConfig {
  clip_sample: boolean;
  clip_sample_range: number;
}

/** The keys of `thresholdSpec`: Imagen's dynamic thresholding of x₀. */
export interface ThresholdConfig {
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
}

/** Config keys every beta-based scheduler shares. */
export interface BetaConfig extends NoiseScheduleConfig {
  prediction_type: string;
}

/**
 * A scheduler over a discrete beta schedule: holds betas, alphas and `alphas_cumprod`.
 * The forward process is DDPM's `√ᾱ_t x₀ + √(1-ᾱ_t) ε` (Ho et al. 2020, eq. 4).
 * @example
 * const s = new DDPMScheduler({});
 * const noisy = s.addNoise(latents, noise, [10, 500]); // training: one timestep per sample
 * const target = s.getVelocity(latents, noise, [10, 500]); // v-prediction target
 */
export abstract class BetaScheduler<C extends BetaConfig> extends SchedulerBase<C> {
  readonly betas: number[];
  readonly alphas: number[];
  /** ᾱ_t, float32 values. */
  readonly alphasCumprod: number[];

  protected constructor(className: string, spec: Spec, config: unknown, fixup?: (c: Record<string, unknown>) => void) {
    super(className, spec, config, fixup);
    const c = this.config as unknown as BetaConfig;
    if (c.trained_betas && c.trained_betas.length !== c.num_train_timesteps)
      throw invalid(className, "config.trained_betas", `an array of num_train_timesteps (${c.num_train_timesteps}) numbers`, `${c.trained_betas.length} numbers`);
    const s: NoiseSchedule = noiseSchedule(c);
    this.betas = s.betas;
    this.alphas = s.alphas;
    this.alphasCumprod = s.alphasCumprod;
  }

  /**
   * Step 4 of the DDPM-family steps: Imagen's dynamic thresholding when `config.thresholding`,
   * else clipping to ±`clip_sample_range` when `config.clip_sample`, else x₀ unchanged.
   */
  protected clipOrThreshold(x0: Tensor): Tensor {
    const c = this.config as unknown as Partial<ClipConfig & ThresholdConfig>;
    if (c.thresholding) return this.thresholdSample(x0);
    if (c.clip_sample) return x0.clamp(-c.clip_sample_range!, c.clip_sample_range!);
    return x0;
  }

  protected trainIndex(t: number, what = "timestep"): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.alphasCumprod.length)
      throw invalid(this.className, what, `an integer in [0, ${this.alphasCumprod.length - 1}]`, t);
    return t;
  }

  /** √ᾱ_t and √(1-ᾱ_t) per timestep (float32). */
  protected alphaSigmaAt(ts: number[]): { a: number[]; s: number[] } {
    const ac = ts.map((t) => this.alphasCumprod[this.trainIndex(t, "addNoise: timesteps")]);
    return { a: ac.map(sqrt32), s: ac.map((v) => sqrt32(f32(1 - v))) };
  }

  /** `√ᾱ_t · original + √(1-ᾱ_t) · noise`, one timestep per batch element. */
  addNoise(original: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor {
    const { a, s } = this.alphaSigmaAt(timestepList(timesteps));
    return tidy(() => perSample(a, original).mul(original).add(perSample(s, original).mul(noise)));
  }

  /** Velocity target (Salimans & Ho 2022): `√ᾱ_t · noise - √(1-ᾱ_t) · sample`. */
  getVelocity(sample: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor {
    const { a, s } = this.alphaSigmaAt(timestepList(timesteps));
    return tidy(() => perSample(a, sample).mul(noise).sub(perSample(s, sample).mul(sample)));
  }
}

/**
 * x₀ from the model output in the DDPM parameterisation x_t = √ᾱ_t x₀ + √(1-ᾱ_t) ε (Ho et al.
 * 2020, eq. 15): ε-prediction inverts it, `sample` is x₀ itself, and v-prediction (Salimans &
 * Ho 2022) gives x₀ = √ᾱ_t x_t - √(1-ᾱ_t) v. `alphaProd` is ᾱ_t as float32; the scalars are
 * rounded to float32 as diffusers' 0-d tensors are.
 * @example
 * const x0 = ddpmX0("epsilon", eps, latents, scheduler.alphasCumprod[999]);
 */
export function ddpmX0(predictionType: string, modelOutput: Tensor, sample: Tensor, alphaProd: number): Tensor {
  const betaProd = f32(1 - alphaProd);
  if (predictionType === "epsilon") return sample.sub(modelOutput.mul(sqrt32(betaProd))).div(sqrt32(alphaProd));
  if (predictionType === "sample") return modelOutput.clone();
  return sample.mul(sqrt32(alphaProd)).sub(modelOutput.mul(sqrt32(betaProd)));
}

/**
 * x₀ and ε from the model output (DDPM parameterisation, see `ddpmX0`), for the samplers
 * that move along the predicted noise direction (DDIM, TCD).
 * @example
 * const [x0, eps] = ddpmX0Eps("v_prediction", v, latents, scheduler.alphasCumprod[500]);
 */
export function ddpmX0Eps(predictionType: string, modelOutput: Tensor, sample: Tensor, alphaProd: number): [Tensor, Tensor] {
  const x0 = ddpmX0(predictionType, modelOutput, sample, alphaProd);
  if (predictionType === "epsilon") return [x0, modelOutput];
  const betaProd = f32(1 - alphaProd);
  if (predictionType === "sample") return [x0, sample.sub(modelOutput.mul(sqrt32(alphaProd))).div(sqrt32(betaProd))];
  return [x0, modelOutput.mul(sqrt32(alphaProd)).add(sample.mul(sqrt32(betaProd)))];
}

/**
 * Zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
 * Flawed", https://arxiv.org/abs/2305.08891) makes ᾱ_T = 0, so σ_T = √((1-ᾱ_T)/ᾱ_T) is
 * infinite; the samplers that work in σ (Euler, DPM-Solver, UniPC) put back fp16's smallest
 * subnormal, 2⁻²⁴, as ᾱ_T, as diffusers does.
 */
export const ZERO_SNR_LAST_ALPHA_CUMPROD = f32(2 ** -24);

/** `alpha_t = 1/√(σ²+1)`, `sigma_t = σ·alpha_t` in float32 (VP view of a VE sigma). @example vpAlphaSigma(1) // [0.7071..., 0.7071...] */
export function vpAlphaSigma(sigma: number): [number, number] {
  const a = div32(1, sqrt32(add32(mul32(sigma, sigma), 1)));
  return [a, mul32(sigma, a)];
}
