/**
 * DDIM: Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models",
 * https://arxiv.org/abs/2010.02502 — the non-Markovian sampler of eq. (12) with σ_t(η) of
 * eq. (16), and its deterministic inversion (Dhariwal & Nichol 2021 / Mokady et al. 2023),
 * mirroring diffusers' `DDIMScheduler` and `DDIMInverseScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, ClipConfig, ThresholdConfig, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, ddpmX0Eps, timestepValue } from "./base";
import { Spec, bool, invalid } from "./config";
import { div32, f32, mul32, sqrt32, sub32 } from "./f32";
import { checkedDiscreteTimesteps } from "./ddpm";
import { betaSpec, clipSpec, predictionSpec, spacingSpec, thresholdSpec } from "./specs";
import { ddimTimesteps, TimestepSpacing } from "./sigmas";

export interface DDIMConfig extends BetaConfig, ClipConfig, ThresholdConfig {
  set_alpha_to_one: boolean;
  steps_offset: number;
  timestep_spacing: TimestepSpacing;
  rescale_betas_zero_snr: boolean;
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  ...clipSpec(true),
  set_alpha_to_one: bool(true),
  ...predictionSpec(),
  ...thresholdSpec(),
  ...spacingSpec("leading"),
  rescale_betas_zero_snr: bool(false),
};

/**
 * DDIM sampler; `eta` (step option, default 0) interpolates between deterministic DDIM (0) and
 * DDPM-like ancestral sampling (1).
 *
 * @example
 * const s = new DDIMScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, steps_offset: 1, set_alpha_to_one: false, clip_sample: false });
 * s.setTimesteps(50);
 * const { prevSample } = s.step(eps, s.timesteps[0], latents, { eta: 0 });
 */
export class DDIMScheduler extends BetaScheduler<DDIMConfig> {
  /** ᾱ used past the last step: 1, or ᾱ_0 when `set_alpha_to_one` is false. */
  readonly finalAlphaCumprod: number;

  constructor(config: Partial<DDIMConfig> & Record<string, unknown> = {}) {
    super("DDIMScheduler", SPEC, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.stepsArgument(numInferenceSteps);
    this.timesteps = checkedDiscreteTimesteps(this.className, this.config, numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
  }

  /** σ_t² of eq. (16): (1-ᾱ_{t-1})/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_{t-1}). */
  private variance(a: number, ap: number): number {
    return mul32(div32(f32(1 - ap), f32(1 - a)), f32(1 - div32(a, ap)));
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const eta = opts.eta ?? 0;
    if (typeof eta !== "number" || !(eta >= 0)) throw invalid(this.className, "step: eta", "a number >= 0", eta);
    if (eta > 0 && opts.noise && opts.generator) throw new Error(`${this.className}: pass either generator or noise to step(), not both`);
    const tt = this.trainIndex(timestepValue(t));
    // 1. get previous step value (=t-1)
    const prevT = tt - Math.floor(c.num_train_timesteps / this.numInferenceSteps!);
    // 2. compute alphas, betas
    const a = this.alphasCumprod[tt];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    return tidy(() => {
      // 3. predicted x₀ ("predicted x_0" of eq. 12) and ε
      const [rawX0, predEps] = ddpmX0Eps(c.prediction_type, modelOutput, sample, a);
      // 4. clip or threshold x₀
      const x0 = this.clipOrThreshold(rawX0);
      // 5. σ_t(η) of eq. (16)
      const std = mul32(f32(eta), sqrt32(this.variance(a, ap)));
      const eps = opts.useClippedModelOutput ? sample.sub(x0.mul(sqrt32(a))).div(sqrt32(f32(1 - a))) : predEps;
      // 6. "direction pointing to x_t" of eq. (12)
      const direction = eps.mul(sqrt32(sub32(f32(1 - ap), mul32(std, std))));
      // 7. x_{t-1} without the random noise of eq. (12)
      let prev = x0.mul(sqrt32(ap)).add(direction);
      if (eta > 0) prev = prev.add(this.noiseLike(modelOutput, opts).mul(std));
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }
}

export interface DDIMInverseConfig extends BetaConfig, ClipConfig {
  set_alpha_to_one: boolean;
  steps_offset: number;
  timestep_spacing: "leading" | "trailing";
  rescale_betas_zero_snr: boolean;
}

const INVERSE_SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  ...clipSpec(true),
  set_alpha_to_one: bool(true),
  ...predictionSpec(),
  ...spacingSpec("leading", ["leading", "trailing"]),
  rescale_betas_zero_snr: bool(false),
};

/**
 * Deterministic DDIM inversion: runs eq. (12) with η = 0 from x_{t-Δ} up to x_t, so a clean
 * latent can be encoded to noise (used by DiffEdit, Null-text inversion, pix2pix-zero).
 *
 * @example
 * const inv = new DDIMInverseScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, clip_sample: false });
 * inv.setTimesteps(50);
 * for (const t of inv.timesteps) latents = inv.step(unet(latents, t), t, latents).prevSample;
 */
export class DDIMInverseScheduler extends BetaScheduler<DDIMInverseConfig> {
  /** ᾱ before the first step: 1, or ᾱ_0 when `set_alpha_to_one` is false. */
  readonly initialAlphaCumprod: number;

  constructor(config: Partial<DDIMInverseConfig> & Record<string, unknown> = {}) {
    const given = (config ?? {}) as Record<string, unknown>;
    // diffusers' deprecated alias
    const fixed = given.set_alpha_to_zero !== undefined && given.set_alpha_to_one === undefined ? { ...given, set_alpha_to_one: given.set_alpha_to_zero } : given;
    super("DDIMInverseScheduler", INVERSE_SPEC, fixed);
    this.initialAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => i);
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.stepsArgument(numInferenceSteps);
    const c = this.config;
    if (numInferenceSteps > c.num_train_timesteps)
      throw invalid(this.className, "setTimesteps: numInferenceSteps", `<= num_train_timesteps (${c.num_train_timesteps})`, numInferenceSteps);
    this.timesteps = ddimTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset).reverse();
    this.numInferenceSteps = numInferenceSteps;
  }

  /**
   * ᾱ at the two levels of the step to timestep `t`: `from`, one stride below (x_{t−Δ}; the
   * initial ᾱ before the first step), and `to`, t itself (x_t).
   */
  private stepAlphas(t: TimestepLike): { from: number; to: number } {
    this.requireTimesteps();
    const c = this.config;
    // The given timestep is the target, the current is one stride below.
    const target = this.trainIndex(timestepValue(t));
    const current = Math.min(target - Math.floor(c.num_train_timesteps / this.numInferenceSteps!), c.num_train_timesteps - 1);
    return { from: current >= 0 ? this.alphasCumprod[current] : this.initialAlphaCumprod, to: this.alphasCumprod[target] };
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    const c = this.config;
    // 1.–2. the next step's value and the alphas of both levels (matching the forward process's noise levels)
    const { from: a, to: an } = this.stepAlphas(t);
    return tidy(() => {
      // 3. predicted x₀ and ε
      const [rawX0, eps] = ddpmX0Eps(c.prediction_type, modelOutput, sample, a);
      // 4. clip x₀ (the inverse config has no thresholding)
      const x0 = this.clipOrThreshold(rawX0);
      // 5. "direction pointing to x_t"
      const direction = eps.mul(sqrt32(f32(1 - an)));
      // 6. x_{t+1}
      const prev = x0.mul(sqrt32(an)).add(direction);
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }

  /**
   * The x_t from which `DDIMScheduler.step` (η = 0, no clipping) with this model output lands on
   * `sample` = x_{t−Δ}. That step is linear, x_{t−Δ} = A·x_t + B·output, so x_t = (x_{t−Δ} − B·output) / A.
   * Fed the model's prediction at the current estimate of x_t, it is one update of fixed-point
   * inversion (Pan et al. 2023, "Effective Real Image Editing with Accelerated Iterative Diffusion
   * Inversion"; Garibi et al. 2024, "ReNoise"), whose fixed point the denoising step maps back exactly.
   * @example const refined = inverse.solveStep(unet(estimate, t), t, previous);
   */
  solveStep(modelOutput: Tensor, t: TimestepLike, sample: Tensor): Tensor {
    const c = this.config;
    const { from, to } = this.stepAlphas(t);
    const [a, s] = [Math.sqrt(from), Math.sqrt(1 - from)]; // x_{t−Δ} = a·x₀ + s·ε
    const [at, st] = [Math.sqrt(to), Math.sqrt(1 - to)];
    // (x₀, ε) from (x_t, output) at ᾱ_t as ddpmX0Eps gives them, substituted into a·x₀ + s·ε.
    const [A, B] = c.prediction_type === "epsilon" ? [a / at, s - (a * st) / at]
      : c.prediction_type === "sample" ? [s / st, a - (s * at) / st]
      : [a * at + s * st, s * at - a * st];
    return tidy(() => sample.sub(modelOutput.mul(B)).div(A));
  }
}
