/**
 * DDPM: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models",
 * https://arxiv.org/abs/2006.11239 — ancestral sampling with the posterior q(x_{t-1} | x_t, x₀)
 * (eqs. 6–7), mirroring diffusers' `DDPMScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, ClipConfig, ThresholdConfig, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, ddpmX0, timestepValue } from "./base";
import { Spec, bool, invalid, oneOf } from "./config";
import { div32, exp32, f32, log32, mul32, sqrt32 } from "./f32";
import { betaSpec, clipSpec, predictionSpec, spacingSpec, thresholdSpec } from "./specs";
import { ddimTimesteps, TimestepSpacing } from "./sigmas";

/** DDPM's `variance_type` values. */
export const DDPM_VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"] as const;

export interface DDPMConfig extends BetaConfig, ClipConfig, ThresholdConfig {
  variance_type: (typeof DDPM_VARIANCE_TYPES)[number];
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  variance_type: oneOf(DDPM_VARIANCE_TYPES, "fixed_small"),
  ...clipSpec(true),
  ...predictionSpec(),
  ...thresholdSpec(),
  ...spacingSpec("leading"),
  rescale_betas_zero_snr: bool(false),
};

/**
 * Integer timesteps for DDPM-style schedulers, with diffusers' checks on `numInferenceSteps`
 * and on custom (descending, in-range) timesteps.
 * @example
 * checkedDiscreteTimesteps("DDIMScheduler", { num_train_timesteps: 1000, timestep_spacing: "trailing", steps_offset: 0 }, 4); // [999, 749, 499, 249]
 */
export function checkedDiscreteTimesteps(
  owner: string,
  c: { num_train_timesteps: number; timestep_spacing: TimestepSpacing; steps_offset: number },
  n: number,
  custom?: number[],
): number[] {
  const T = c.num_train_timesteps;
  if (custom) {
    if (!Array.isArray(custom) || custom.length === 0 || !custom.every(Number.isInteger))
      throw invalid(owner, "setTimesteps: timesteps", "a non-empty array of integers", custom);
    for (let i = 1; i < custom.length; i++)
      if (custom[i] >= custom[i - 1]) throw invalid(owner, "setTimesteps: timesteps", "in descending order", custom);
    if (custom[0] >= T) throw invalid(owner, "setTimesteps: timesteps[0]", `< num_train_timesteps (${T})`, custom[0]);
    return [...custom];
  }
  if (n > T) throw invalid(owner, "setTimesteps: numInferenceSteps", `<= num_train_timesteps (${T})`, n);
  return ddimTimesteps(c.timestep_spacing, T, n, c.steps_offset);
}

/**
 * DDPM ancestral sampler.
 *
 * @example
 * const s = new DDPMScheduler({ beta_schedule: "linear" });
 * s.setTimesteps(50);
 * for (const t of s.timesteps) sample = s.step(model(sample, t), t, sample, { generator }).prevSample;
 */
export class DDPMScheduler extends BetaScheduler<DDPMConfig> {
  private customTimesteps = false;

  constructor(config: Partial<DDPMConfig> & Record<string, unknown> = {}) {
    super("DDPMScheduler", SPEC, config);
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    if (opts.timesteps) {
      this.timesteps = checkedDiscreteTimesteps(this.className, this.config, 0, opts.timesteps);
      this.customTimesteps = true;
      this.numInferenceSteps = this.timesteps.length;
      return;
    }
    this.stepsArgument(numInferenceSteps);
    this.timesteps = checkedDiscreteTimesteps(this.className, this.config, numInferenceSteps);
    this.customTimesteps = false;
    this.numInferenceSteps = numInferenceSteps;
  }

  /** The timestep after `t` in the schedule (-1 after the last). */
  previousTimestep(t: number): number {
    if (this.customTimesteps || this.numInferenceSteps) {
      const i = this.timesteps.indexOf(t);
      if (i < 0) throw invalid(this.className, "timestep", "one of scheduler.timesteps", t);
      return i === this.timesteps.length - 1 ? -1 : this.timesteps[i + 1];
    }
    return t - 1;
  }

  /** Posterior variance β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t and its variants, float32. */
  private variance(t: number): { small: number; currentBeta: number } {
    const prevT = this.previousTimestep(t);
    const a = this.alphasCumprod[t];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
    const currentBeta = f32(1 - div32(a, ap));
    const small = Math.max(mul32(div32(f32(1 - ap), f32(1 - a)), currentBeta), f32(1e-20));
    return { small, currentBeta };
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const c = this.config;
    const tt = this.trainIndex(timestepValue(t));
    // 1. get previous step value
    const prevT = this.previousTimestep(tt);
    return tidy(() => {
      let mo = modelOutput;
      let predictedVariance: Tensor | null = null;
      const ch = sample.shape[1];
      if (modelOutput.shape[1] === ch * 2 && (c.variance_type === "learned" || c.variance_type === "learned_range")) {
        mo = modelOutput.slice(1, 0, ch);
        predictedVariance = modelOutput.slice(1, ch, 2 * ch);
      }
      // 2. compute alphas, betas
      const a = this.alphasCumprod[tt];
      const ap = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
      const bp = f32(1 - a);
      const bpp = f32(1 - ap);
      const currentAlpha = div32(a, ap);
      const currentBeta = f32(1 - currentAlpha);
      // 3. compute predicted original sample x₀ (eq. 15), 4. then clip or threshold it
      const x0 = this.clipOrThreshold(ddpmX0(c.prediction_type, mo, sample, a));
      // 5. coefficients of x₀ and x_t in the posterior mean μ̃_t (eq. 7)
      const x0Coeff = div32(mul32(sqrt32(ap), currentBeta), bp);
      const xtCoeff = div32(mul32(sqrt32(currentAlpha), bpp), bp);
      // 6. posterior mean
      let prev = x0.mul(x0Coeff).add(sample.mul(xtCoeff));
      // 7. add noise σ_t z
      if (tt > 0) {
        const z = this.noiseLike(mo, opts);
        prev = prev.add(this.noiseTerm(tt, currentBeta, predictedVariance, z));
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
  }

  private noiseTerm(t: number, currentBeta: number, predicted: Tensor | null, z: Tensor): Tensor {
    const { small } = this.variance(t);
    switch (this.config.variance_type) {
      case "fixed_small":
        return z.mul(sqrt32(small));
      case "fixed_small_log":
        return z.mul(exp32(mul32(0.5, log32(small))));
      case "fixed_large":
        return z.mul(sqrt32(currentBeta));
      case "fixed_large_log": // diffusers takes √log β_t here (NaN); kept for parity
        return z.mul(sqrt32(log32(currentBeta)));
      case "learned":
        if (!predicted) throw invalid(this.className, "step: modelOutput", "2·C channels for variance_type learned", "C channels");
        return predicted.sqrt().mul(z);
      case "learned_range": {
        if (!predicted) throw invalid(this.className, "step: modelOutput", "2·C channels for variance_type learned_range", "C channels");
        const frac = predicted.add(1).div(2);
        const v = frac.mul(log32(currentBeta)).add(frac.neg().add(1).mul(log32(small)));
        return v.mul(0.5).exp().mul(z);
      }
    }
  }
}
