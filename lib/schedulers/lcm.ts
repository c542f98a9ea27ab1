/**
 * LCM: Luo, Tan, Huang, Li & Zhao (2023), "Latent Consistency Models",
 * https://arxiv.org/abs/2310.04378 — multistep consistency sampling (Algorithm 3): denoise with
 * the consistency boundary conditions c_skip/c_out, then re-noise to the next timestep of the
 * distillation schedule. Mirrors diffusers' `LCMScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, timestepValue } from "./base";
import { Spec, bool, int, invalid, num } from "./config";
import { add32, div32, f32, mul32, sqrt32 } from "./f32";
import { betaSpec, clipSpec, predictionSpec, spacingSpec, thresholdSpec } from "./specs";
import { numpyLinspace } from "./numpy";
import { checkedDiscreteTimesteps } from "./ddpm";

export interface LCMConfig extends BetaConfig {
  original_inference_steps: number;
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
  steps_offset: number;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
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
 * s strength) subsampled to `n` evenly spaced (by index) timesteps, descending.
 *
 * @example
 * lcmTimesteps(Array.from({ length: 50 }, (_, i) => (i + 1) * 20 - 1), 4); // [999, 759, 499, 259]
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
 * LCM multistep sampler (1–8 steps typical).
 *
 * @example
 * const s = new LCMScheduler({});
 * s.setTimesteps(4); // [999, 759, 499, 259]
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x, { generator }).prevSample;
 */
/**
 * What LCM and TCD share: the inference timesteps picked from the distillation schedule
 * `origin` (or user timesteps, cut by `strength`).
 */
export abstract class ConsistencyScheduler extends BetaScheduler<LCMConfig> {
  protected applyInferenceSchedule(origin: number[], original: number, strength: number, numInferenceSteps: number, custom: number[] | undefined): void {
    const T = this.config.num_train_timesteps;
    if (custom) {
      const ts = checkedCustomTimesteps(this.className, T, custom);
      this.numInferenceSteps = ts.length;
      const init = Math.min(Math.floor(ts.length * strength), ts.length);
      this.timesteps = ts.slice(Math.max(ts.length - init, 0));
      return;
    }
    this.stepsArgument(numInferenceSteps);
    if (numInferenceSteps > T) throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= num_train_timesteps (${T})`, numInferenceSteps);
    if (Math.floor(origin.length / numInferenceSteps) < 1)
      throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= originalInferenceSteps × strength (${Math.floor(original * strength)})`, numInferenceSteps);
    if (numInferenceSteps > original) throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= originalInferenceSteps (${original})`, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = lcmTimesteps(origin, numInferenceSteps);
  }
}

export class LCMScheduler extends ConsistencyScheduler {
  readonly finalAlphaCumprod: number;

  constructor(config: Partial<LCMConfig> & Record<string, unknown> = {}) {
    super("LCMScheduler", CONSISTENCY_SPEC, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const strength = opts.strength ?? 1;
    // 1. the LCM training/distillation schedule
    const original = opts.originalInferenceSteps ?? c.original_inference_steps;
    if (original > T) throw invalid(this.className, "setTimesteps: originalInferenceSteps", `<= num_train_timesteps (${T})`, original);
    const k = Math.floor(T / original);
    const origin = Array.from({ length: Math.floor(original * strength) }, (_, i) => (i + 1) * k - 1);
    // 2. the inference schedule
    this.applyInferenceSchedule(origin, original, strength, numInferenceSteps, opts.timesteps);
    this._stepIndex = null;
    this._beginIndex = null;
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
      // 4. predicted x₀
      let x0: Tensor;
      if (c.prediction_type === "epsilon") x0 = sample.sub(modelOutput.mul(sqrt32(f32(1 - a)))).div(sqrt32(a));
      else if (c.prediction_type === "sample") x0 = modelOutput.clone();
      else x0 = sample.mul(sqrt32(a)).sub(modelOutput.mul(sqrt32(f32(1 - a))));
      // 5. clip or threshold x₀
      if (c.thresholding) x0 = this.thresholdSample(x0);
      else if (c.clip_sample) x0 = x0.clamp(-c.clip_sample_range, c.clip_sample_range);
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
