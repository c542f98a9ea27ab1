/**
 * Euler samplers of Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based
 * Generative Models", https://arxiv.org/abs/2206.00364: Algorithm 2 (Euler steps with optional
 * churn) and the ancestral variant of k-diffusion (`sample_euler_ancestral`), mirroring
 * diffusers' `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, bool, num, oneOf } from "./config";
import { div32, f32, log32, mul32, pow32, sqrt32, sub32 } from "./f32";
import { numpyInterp, numpyLinspace, torchLinspace32 } from "./numpy";
import { SigmaConfig, SigmaScheduler } from "./sigma_base";
import { sigmaToT } from "./sigmas";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec } from "./specs";

export interface EulerConfig extends SigmaConfig {
  interpolation_type: "linear" | "log_linear";
  timestep_type: "discrete" | "continuous";
  rescale_betas_zero_snr: boolean;
  final_sigmas_type: "zero" | "sigma_min";
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  ...predictionSpec(["epsilon", "sample", "v_prediction", "original_sample"]),
  interpolation_type: oneOf(["linear", "log_linear"], "linear"),
  ...sigmaKindSpec(),
  sigma_min: num(null, { gt: 0, nullable: true }),
  sigma_max: num(null, { gt: 0, nullable: true }),
  ...spacingSpec("linspace"),
  timestep_type: oneOf(["discrete", "continuous"], "discrete"),
  rescale_betas_zero_snr: bool(false),
  final_sigmas_type: oneOf(["zero", "sigma_min"], "zero"),
};

/**
 * Euler method on the probability-flow ODE dx/dσ = (x - x₀)/σ, with Karras churn
 * (`sChurn`, `sTmin`, `sTmax`, `sNoise` step options).
 *
 * @example
 * const s = new EulerDiscreteScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, use_karras_sigmas: true });
 * s.setTimesteps(25);
 * let x = randn(shape).mul(s.initNoiseSigma);
 * for (const t of s.timesteps) x = s.step(unet(s.scaleModelInput(x, t), t), t, x).prevSample;
 */
export class EulerDiscreteScheduler extends SigmaScheduler<EulerConfig> {
  constructor(config: Partial<EulerConfig> & Record<string, unknown> = {}) {
    super("EulerDiscreteScheduler", SPEC, config);
    const c = this.config;
    if (c.rescale_betas_zero_snr) this.patchZeroSnr();
    this.sigmas = [...this.trainSigmas].reverse().concat([0]);
    this.timesteps = this.continuousV()
      ? this.sigmas.slice(0, -1).map((s) => mul32(0.25, log32(s)))
      : numpyLinspace(0, c.num_train_timesteps - 1, c.num_train_timesteps).map(f32).reverse();
  }

  private continuousV(): boolean {
    return this.config.timestep_type === "continuous" && this.config.prediction_type === "v_prediction";
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    let sigmas: number[];
    let timesteps: number[];
    if (opts.sigmas) {
      sigmas = opts.sigmas.map(f32);
      timesteps = sigmas.slice(0, -1).map((s) => sigmaToT(s, this.logSigmas));
      numInferenceSteps = sigmas.length - 1;
    } else if (opts.timesteps) {
      if (c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas)
        throw new Error(`${this.className}: custom timesteps cannot be used with karras/exponential/beta sigmas`);
      timesteps = opts.timesteps.map(f32);
      sigmas = this.finish(this.interp(timesteps));
      numInferenceSteps = timesteps.length;
    } else {
      this.stepsArgument(numInferenceSteps);
      if (c.interpolation_type === "log_linear") {
        timesteps = this.inferenceSchedule(numInferenceSteps).timesteps;
        const t = this.trainSigmas;
        sigmas = this.finish(torchLinspace32(log32(t[t.length - 1]), log32(t[0]), numInferenceSteps + 1).map((v) => f32(Math.exp(v))));
      } else {
        const s = this.inferenceSchedule(numInferenceSteps);
        timesteps = s.timesteps;
        sigmas = this.finish(s.sigmas);
      }
    }
    this.sigmas = sigmas;
    this.timesteps = this.continuousV() ? sigmas.slice(0, -1).map((s) => mul32(0.25, log32(s))) : timesteps.map(f32);
    this.startSchedule(numInferenceSteps);
  }

  private interp(ts: number[]): number[] {
    return numpyInterp(ts, this.trainSigmas.map((_, i) => i), this.trainSigmas);
  }

  /** Appends the final sigma (0 or σ_min of training) and rounds to float32. */
  private finish(sigmas: number[]): number[] {
    const last = this.config.final_sigmas_type === "sigma_min" ? this.trainSigmas[0] : 0;
    return sigmas.concat([last]).map(f32);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    const c = this.config;
    const sChurn = opts.sChurn ?? 0;
    const sTmin = opts.sTmin ?? 0;
    const sTmax = opts.sTmax ?? Infinity;
    const sNoise = opts.sNoise ?? 1;
    const sigma = this.sigmas![i];
    // 1. churn: γ = min(S_churn / N, √2 - 1) for σ in [S_tmin, S_tmax] (Algorithm 2, line 4)
    const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (this.sigmas!.length - 1), 2 ** 0.5 - 1) : 0;
    const sigmaHat = mul32(sigma, f32(gamma + 1));
    const out = tidy(() => {
      let x = sample.dtype === "float32" ? sample : sample.float();
      if (gamma > 0) {
        const eps = this.noiseLike(modelOutput, opts).mul(sNoise);
        x = x.add(eps.mul(sqrt32(sub32(pow32(sigmaHat, 2), pow32(sigma, 2)))));
      }
      // 2. x₀ from the model output (EDM denoiser D(x; σ̂))
      const x0 = c.prediction_type === "sample" || c.prediction_type === "original_sample"
        ? modelOutput.clone()
        : this.predictX0(c.prediction_type, modelOutput, x, sigmaHat, sigma);
      // 3. ODE derivative d = (x - x₀)/σ̂ and Euler step to σ_{i+1}
      const d = x.sub(x0).div(sigmaHat);
      const dt = sub32(this.sigmas![i + 1], sigmaHat);
      let prev = x.add(d.mul(dt));
      if (prev.dtype !== modelOutput.dtype) prev = prev.to(modelOutput.dtype);
      return { prevSample: prev, predOriginalSample: x0 };
    });
    this._stepIndex = i + 1;
    return out;
  }
}

export interface EulerAncestralConfig extends SigmaConfig {
  rescale_betas_zero_snr: boolean;
}

const ANCESTRAL_SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  ...predictionSpec(["epsilon", "v_prediction"]),
  ...spacingSpec("linspace"),
  rescale_betas_zero_snr: bool(false),
};

/**
 * Ancestral Euler: step to σ_down deterministically, then add fresh noise σ_up·z, with
 * σ_up = √(σ_{i+1}²(σ_i² - σ_{i+1}²)/σ_i²) and σ_down = √(σ_{i+1}² - σ_up²).
 *
 * @example
 * const s = new EulerAncestralDiscreteScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 });
 * s.setTimesteps(30);
 * x = s.step(eps, s.timesteps[0], x, { generator: new Generator(0) }).prevSample;
 */
export class EulerAncestralDiscreteScheduler extends SigmaScheduler<EulerAncestralConfig> {
  constructor(config: Partial<EulerAncestralConfig> & Record<string, unknown> = {}) {
    super("EulerAncestralDiscreteScheduler", ANCESTRAL_SPEC, config);
    const c = this.config;
    if (c.rescale_betas_zero_snr) this.patchZeroSnr();
    this.sigmas = [...this.trainSigmas].reverse().concat([0]);
    this.timesteps = numpyLinspace(0, c.num_train_timesteps - 1, c.num_train_timesteps).reverse();
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.setInferenceSchedule(numInferenceSteps);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    const c = this.config;
    const sigma = this.sigmas![i];
    const sigmaTo = this.sigmas![i + 1];
    // 1. σ_up and σ_down splitting the step into deterministic and stochastic parts
    const sf2 = pow32(sigma, 2);
    const st2 = pow32(sigmaTo, 2);
    const sigmaUp = sqrt32(div32(mul32(st2, sub32(sf2, st2)), sf2));
    const sigmaDown = sqrt32(sub32(st2, pow32(sigmaUp, 2)));
    const out = tidy(() => {
      const x = sample.dtype === "float32" ? sample : sample.float();
      // 2. x₀ from the model output
      const x0 = this.predictX0(c.prediction_type, modelOutput, x, sigma);
      // 3. ODE derivative and Euler step down to σ_down
      const d = x.sub(x0).div(sigma);
      let prev = x.add(d.mul(sub32(sigmaDown, sigma)));
      // 4. ancestral noise
      prev = prev.add(this.noiseLike(modelOutput, opts).mul(sigmaUp));
      if (prev.dtype !== modelOutput.dtype) prev = prev.to(modelOutput.dtype);
      return { prevSample: prev, predOriginalSample: x0 };
    });
    this._stepIndex = i + 1;
    return out;
  }
}
