/**
 * Linear multistep (Adams–Bashforth) sampler on the probability-flow ODE in σ, from
 * k-diffusion's `sample_lms` (Crowson), following Karras et al. (2022),
 * https://arxiv.org/abs/2206.00364 — mirroring diffusers' `LMSDiscreteScheduler`.
 * The coefficient of derivative d_{i-k} is ∫_{σ_i}^{σ_{i+1}} ℓ_k(τ) dτ for the Lagrange basis
 * polynomial ℓ_k through the last `order` sigmas.
 */
import { Tensor, keep, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, invalid } from "./config";
import { f32 } from "./f32";
import { SigmaConfig, SigmaScheduler } from "./sigma_base";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec } from "./specs";

export type LMSConfig = SigmaConfig;

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  ...sigmaKindSpec(),
  ...predictionSpec(),
  ...spacingSpec("linspace"),
};

// 4-point Gauss–Legendre: exact for the (degree ≤ 3) Lagrange polynomials of order ≤ 4.
const GL_X = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_W = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

/**
 * LMS coefficient ∫_{σ[t]}^{σ[t+1]} Π_{k≠j} (τ - σ[t-k]) / (σ[t-j] - σ[t-k]) dτ (diffusers'
 * `get_lms_coefficient`, which integrates the same polynomial with `scipy.integrate.quad`).
 *
 * @example
 * lmsCoefficient([2, 1, 0.5], 1, 1, 0); // ∫_1^0.5 1 dτ = -0.5
 */
export function lmsCoefficient(sigmas: number[], order: number, t: number, j: number): number {
  const a = sigmas[t];
  const b = sigmas[t + 1];
  let sum = 0;
  for (let q = 0; q < GL_X.length; q++) {
    const tau = 0.5 * (b - a) * GL_X[q] + 0.5 * (a + b);
    let prod = 1;
    for (let k = 0; k < order; k++) {
      if (k === j) continue;
      prod *= (tau - sigmas[t - k]) / (sigmas[t - j] - sigmas[t - k]);
    }
    sum += GL_W[q] * prod;
  }
  return 0.5 * (b - a) * sum;
}

/**
 * LMS sampler (order ≤ 4 via the `order` step option, default 4).
 *
 * @example
 * const s = new LMSDiscreteScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 });
 * s.setTimesteps(30);
 * for (const t of s.timesteps) x = s.step(unet(s.scaleModelInput(x, t), t), t, x).prevSample;
 */
export class LMSDiscreteScheduler extends SigmaScheduler<LMSConfig> {
  private derivatives: Tensor[] = [];

  constructor(config: Partial<LMSConfig> & Record<string, unknown> = {}) {
    super("LMSDiscreteScheduler", SPEC, config);
    this.setTimesteps(this.config.num_train_timesteps);
    this.numInferenceSteps = null;
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.setInferenceSchedule(numInferenceSteps);
  }

  protected resetState(): void {
    for (const d of this.derivatives) d.dispose();
    this.derivatives = [];
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions & { order?: number } = {}): StepOutput {
    const i = this.initStepIndex(t);
    const maxOrder = opts.order ?? 4;
    if (!Number.isInteger(maxOrder) || maxOrder < 1 || maxOrder > 4) throw invalid(this.className, "step: order", "an integer in [1, 4]", maxOrder);
    const sigma = this.sigmas![i];
    const out = tidy(() => {
      // 1. x₀ from the σ-scaled model output
      const x0 = this.predictX0(this.config.prediction_type, modelOutput, sample, sigma);
      // 2. ODE derivative
      this.derivatives.push(keep(sample.sub(x0).div(sigma)));
      if (this.derivatives.length > maxOrder) this.derivatives.shift()!.dispose();
      // 3. linear multistep coefficients
      const order = Math.min(i + 1, maxOrder);
      const coeffs = Array.from({ length: order }, (_, j) => lmsCoefficient(this.sigmas!, order, i, j));
      // 4. x_{i+1} = x_i + Σ_j c_j d_{i-j}
      const ds = [...this.derivatives].reverse();
      let acc = ds[0].mul(f32(coeffs[0]));
      for (let j = 1; j < Math.min(order, ds.length); j++) acc = acc.add(ds[j].mul(f32(coeffs[j])));
      return { prevSample: sample.add(acc), predOriginalSample: x0 };
    });
    this._stepIndex = i + 1;
    return out;
  }
}
