/**
 * LCM: Luo, Tan, Huang, Li & Zhao (2023), "Latent Consistency Models",
 * https://arxiv.org/abs/2310.04378 — multistep consistency sampling (Algorithm 3): denoise with
 * the consistency boundary conditions c_skip/c_out, then re-noise to the next timestep of the
 * distillation schedule. Mirrors diffusers' `LCMScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, ClipConfig, ThresholdConfig, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, ddpmX0, timestepValue } from "./base";
import { Spec, bool, int, invalid, num } from "./config";
import { add32, div32, f32, mul32, sqrt32 } from "./f32";
import { betaSpec, clipSpec, predictionSpec, spacingSpec, thresholdSpec } from "./specs";
import { numpyLinspace } from "./numpy";
import { checkedDiscreteTimesteps } from "./ddpm";

export interface LCMConfig extends BetaConfig, ClipConfig, ThresholdConfig {
  original_inference_steps: number;
  set_alpha_to_one: boolean;
  steps_offset: number;
  timestep_spacing: "leading" | "trailing" | "linspace";
  timestep_scaling: number;
  rescale_betas_zero_snr: boolean;
}

/** Config spec shared by LCM and TCD (same `__init__` in diffusers). */
export const CONSISTENCY_SPEC: Spec = {
  ...betaSpec(0.00085, 0.012, "scaled_linear"),
  original_inference_steps: int(50, { min: 1 }),
  ...clipSpec(false),
  set_alpha_to_one: bool(true),
  ...predictionSpec(),
  ...thresholdSpec(),
  ...spacingSpec("leading"),
  timestep_scaling: num(10.0),
  rescale_betas_zero_snr: bool(false),
};

/**
 * The distillation schedule `[k-1, 2k-1, ..., N·s·k - 1]` with k = T // N (N original steps,
 * s strength): the timesteps LCM and TCD were distilled on, ascending.
 *
 * @example
 * distillationTimesteps(1000, 50, 1); // [19, 39, ..., 999] (50 timesteps)
 * distillationTimesteps(1000, 50, 0.5); // [19, 39, ..., 499]
 */
export function distillationTimesteps(T: number, original: number, strength: number): number[] {
  const k = Math.floor(T / original);
  return Array.from({ length: Math.floor(original * strength) }, (_, i) => (i + 1) * k - 1);
}

/**
 * The distillation schedule (`distillationTimesteps`) subsampled to `n` evenly spaced (by
 * index) timesteps, descending.
 *
 * @example
 * lcmTimesteps(distillationTimesteps(1000, 50, 1), 4); // [999, 759, 499, 259]
 */
export function lcmTimesteps(origin: number[], n: number): number[] {
  const desc = [...origin].reverse();
  return numpyLinspace(0, desc.length, n, false).map((x) => desc[Math.floor(x)]);
}

/** Consistency-model boundary conditions at `t` (σ_data = 0.5), float32 like diffusers. @example boundaryScalings(999, 10) // { cSkip ≈ 2.5e-8, cOut ≈ 1 } */
export function boundaryScalings(t: number, timestepScaling: number): { cSkip: number; cOut: number } {
  const scaled = mul32(f32(t), f32(timestepScaling));
  const den = add32(mul32(scaled, scaled), 0.25);
  return { cSkip: mul32(div32(1, den), 0.25), cOut: div32(scaled, sqrt32(den)) };
}

/** Custom-timestep validation shared by LCM and TCD (descending, below T). @example checkedCustomTimesteps("LCMScheduler", 1000, [999, 499]) */
export function checkedCustomTimesteps(owner: string, T: number, ts: number[]): number[] {
  return checkedDiscreteTimesteps(owner, { num_train_timesteps: T, timestep_spacing: "leading", steps_offset: 0 }, 0, ts);
}

/**
 * What LCM and TCD share (the same `__init__` and `set_timesteps` in diffusers): the config,
 * ᾱ past the last step, and the inference timesteps picked from the distillation schedule
 * `origin` (or user timesteps, cut by `strength`).
 */
export abstract class ConsistencyScheduler extends BetaScheduler<LCMConfig> {
  /** ᾱ used past the last step: 1, or ᾱ_0 when `set_alpha_to_one` is false. */
  readonly finalAlphaCumprod: number;

  protected constructor(className: string, config: unknown) {
    super(className, CONSISTENCY_SPEC, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  /** Step 2 of `setTimesteps`: the inference timesteps, then a fresh step index. */
  protected applyInferenceSchedule(origin: number[], original: number, strength: number, numInferenceSteps: number, custom: number[] | undefined): void {
    const T = this.config.num_train_timesteps;
    if (custom) {
      const ts = checkedCustomTimesteps(this.className, T, custom);
      this.numInferenceSteps = ts.length;
      const init = Math.min(Math.floor(ts.length * strength), ts.length);
      this.timesteps = ts.slice(Math.max(ts.length - init, 0));
    } else {
      this.stepsArgument(numInferenceSteps);
      if (numInferenceSteps > T) throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= num_train_timesteps (${T})`, numInferenceSteps);
      if (Math.floor(origin.length / numInferenceSteps) < 1)
        throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= originalInferenceSteps × strength (${Math.floor(original * strength)})`, numInferenceSteps);
      if (numInferenceSteps > original) throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= originalInferenceSteps (${original})`, numInferenceSteps);
      this.numInferenceSteps = numInferenceSteps;
      this.timesteps = lcmTimesteps(origin, numInferenceSteps);
    }
    this._stepIndex = null;
    this._beginIndex = null;
  }
}

/**
 * LCM multistep sampler (1–8 steps typical).
 *
 * @example
 * const s = new LCMScheduler({});
 * s.setTimesteps(4); // [999, 759, 499, 259]
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x, { generator }).prevSample;
 */
export class LCMScheduler extends ConsistencyScheduler {
  constructor(config: Partial<LCMConfig> & Record<string, unknown> = {}) {
    super("LCMScheduler", config);
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const strength = opts.strength ?? 1;
    // 1. the LCM training/distillation schedule
    const original = opts.originalInferenceSteps ?? c.original_inference_steps;
    if (original > T) throw invalid(this.className, "setTimesteps: originalInferenceSteps", `<= num_train_timesteps (${T})`, original);
    const origin = distillationTimesteps(T, original, strength);
    // 2. the inference schedule
    this.applyInferenceSchedule(origin, original, strength, numInferenceSteps, opts.timesteps);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const i = this.initStepIndex(t);
    const tt = this.trainIndex(timestepValue(t));
    // 1. previous step value
    const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1] : tt;
    // 2. alphas, betas
    const a = this.alphasCumprod[tt];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    // 3. boundary-condition scalings
    const { cSkip, cOut } = boundaryScalings(tt, c.timestep_scaling);
    const out = tidy(() => {
      // 4. predicted x₀, 5. clipped or thresholded
      const x0 = this.clipOrThreshold(ddpmX0(c.prediction_type, modelOutput, sample, a));
      // 6. denoise with the boundary conditions
      const denoised = x0.mul(cOut).add(sample.mul(cSkip));
      // 7. re-noise to the next timestep (not after the last one)
      const prev = i !== this.numInferenceSteps! - 1
        ? denoised.mul(sqrt32(ap)).add(this.noiseLike(modelOutput, opts).mul(sqrt32(f32(1 - ap))))
        : denoised.clone();
      return { prevSample: prev, predOriginalSample: denoised };
    });
    this._stepIndex = i + 1;
    return out;
  }
}
