/**
 * Base of the variance-exploding samplers (Karras et al. 2022's σ-parameterisation):
 * x_σ = x₀ + σ·ε with σ_t = √((1-ᾱ_t)/ᾱ_t). Shared by Euler, Euler ancestral, Heun, LMS,
 * KDPM2 and KDPM2 ancestral: the training sigmas, the inference sigma schedule (interpolated,
 * Karras, exponential or beta), input scaling 1/√(σ²+1), and the forward process.
 */
import { Tensor, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, TimestepLike, TimestepsLike, ZERO_SNR_LAST_ALPHA_CUMPROD, perSample, timestepList } from "./base";
import { Spec } from "./config";
import { add32, f32, log32, mul32, sqrt32 } from "./f32";
import { numpyInterp } from "./numpy";
import { trainSigmas } from "./schedules";
import { betaSigmas, eulerTimesteps, exponentialSigmas, karrasSigmas, sigmaToT, TimestepSpacing } from "./sigmas";
import { SigmaKind, checkOneSigmaKind, sigmaKind } from "./specs";

export interface SigmaConfig extends BetaConfig {
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  use_karras_sigmas?: boolean;
  use_exponential_sigmas?: boolean;
  use_beta_sigmas?: boolean;
  sigma_min?: number | null;
  sigma_max?: number | null;
}

/** Inference sigmas (float64, without the final one) and their timesteps. */
export interface InferenceSchedule {
  sigmas: number[];
  timesteps: number[];
  kind: SigmaKind;
}

/**
 * Base of the σ-parameterised samplers (see the module doc).
 * @example
 * const s = new EulerDiscreteScheduler({});
 * s.setTimesteps(20);
 * const x = randn(shape).mul(s.initNoiseSigma);
 */
export abstract class SigmaScheduler<C extends SigmaConfig> extends BetaScheduler<C> {
  /** σ of every training timestep, increasing (float32). */
  protected trainSigmas: number[];
  /** float32 log of `trainSigmas`. */
  protected logSigmas: number[];

  protected constructor(className: string, spec: Spec, config: unknown, fixup?: (c: Record<string, unknown>) => void) {
    super(className, spec, config, fixup);
    checkOneSigmaKind(className, this.config as unknown as Record<string, unknown>);
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.logSigmas = this.trainSigmas.map(log32);
  }

  /** Zero-SNR fix-up (Euler, Euler ancestral): ᾱ_T = 2⁻²⁴ so σ_T stays finite, then the training sigmas again. */
  protected patchZeroSnr(): void {
    this.alphasCumprod[this.alphasCumprod.length - 1] = ZERO_SNR_LAST_ALPHA_CUMPROD;
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.logSigmas = this.trainSigmas.map(log32);
  }

  /** √(σ_max² + 1) for "leading" spacing, else σ_max (float32). */
  get initNoiseSigma(): number {
    const max = Math.max(...(this.sigmas ?? this.trainSigmas));
    const c = this.config as unknown as SigmaConfig;
    return c.timestep_spacing === "linspace" || c.timestep_spacing === "trailing" ? max : sqrt32(add32(mul32(max, max), 1));
  }

  /**
   * Steps 1–3 of diffusers' `set_timesteps`: spaced timesteps, σ interpolated at them, then the
   * optional Karras / exponential / beta re-spacing with timesteps mapped back via `_sigma_to_t`.
   */
  protected inferenceSchedule(n: number): InferenceSchedule {
    const c = this.config as unknown as SigmaConfig;
    let timesteps = eulerTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
    let sigmas = numpyInterp(timesteps, this.trainSigmas.map((_, i) => i), this.trainSigmas);
    const kind = sigmaKind(c);
    if (kind) {
      const lo = c.sigma_min ?? sigmas[sigmas.length - 1];
      const hi = c.sigma_max ?? sigmas[0];
      sigmas = kind === "karras" ? karrasSigmas(lo, hi, n) : kind === "exponential" ? exponentialSigmas(lo, hi, n) : betaSigmas(lo, hi, n);
      timesteps = sigmas.map((s) => sigmaToT(s, this.logSigmas));
    }
    return { sigmas, timesteps, kind };
  }

  /**
   * `setTimesteps` of the samplers that step on the plain schedule (Euler ancestral, LMS):
   * `inferenceSchedule` with a final σ = 0, sigmas and timesteps as float32.
   */
  protected setInferenceSchedule(n: number): void {
    this.stepsArgument(n);
    const s = this.inferenceSchedule(n);
    this.sigmas = s.sigmas.concat([0]).map(f32);
    this.timesteps = s.timesteps.map(f32);
    this.startSchedule(n);
  }

  /** The end of every `setTimesteps`: the step count, no state from an earlier run, a fresh step index. */
  protected startSchedule(n: number): void {
    this.numInferenceSteps = n;
    this.resetState();
    this._stepIndex = null;
    this._beginIndex = null;
  }

  /** σ at the current step for input scaling (KDPM2 uses its interpolated sigmas). */
  protected inputSigma(i: number): number {
    return this.sigmas![i];
  }

  /** x / √(σ² + 1): the EDM input preconditioning c_in. */
  scaleModelInput(sample: Tensor, t: TimestepLike): Tensor {
    const i = this.initStepIndex(t);
    const s = this.inputSigma(i);
    return sample.div(sqrt32(add32(mul32(s, s), 1)));
  }

  /** x₀ + σ_t · ε, one timestep per batch element (σ looked up in `sigmas`). */
  addNoise(original: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor {
    const sig = this.noiseIndices(timestepList(timesteps)).map((i) => this.sigmas![i]);
    return tidy(() => original.add(noise.mul(perSample(sig, original))));
  }

  /** Model prediction → x₀ for the σ parameterisation (ε, v or x₀), diffusers' formulas. */
  protected predictX0(type: string, mo: Tensor, sample: Tensor, sigma: number, vSigma = sigma): Tensor {
    if (type === "epsilon") return sample.sub(mo.mul(sigma));
    if (type === "v_prediction") {
      const s2p1 = add32(mul32(vSigma, vSigma), 1);
      return mo.mul(f32(-vSigma / sqrt32(s2p1))).add(sample.div(s2p1));
    }
    return mo.clone();
  }
}
