/**
 * Heun's 2nd-order method of Karras et al. (2022), "Elucidating the Design Space of
 * Diffusion-Based Generative Models", https://arxiv.org/abs/2206.00364, Algorithm 1 (with
 * γ = 0): an Euler predictor to σ_{i+1} then a trapezoidal corrector, one model call each.
 * Each predictor/corrector pair shares a timestep, so `timesteps` lists interior timesteps
 * twice. Mirrors diffusers' `HeunDiscreteScheduler`.
 */
import { Tensor, keep, tidy } from "../tensor";
import { ClipConfig, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec } from "./config";
import { f32, sub32 } from "./f32";
import { numpyInterp } from "./numpy";
import { SigmaConfig, SigmaScheduler } from "./sigma_base";
import { betaSpec, clipSpec, predictionSpec, sigmaKindSpec, spacingSpec } from "./specs";

export type HeunConfig = SigmaConfig & ClipConfig;

const SPEC: Spec = {
  ...betaSpec(0.00085, 0.012, "linear"),
  ...predictionSpec(),
  ...sigmaKindSpec(),
  ...clipSpec(false),
  ...spacingSpec("linspace"),
};

/** `[x0, x1, x1, x2, x2, ...]`: interior values repeated for the predictor/corrector pairs. @example interleavePairs([3, 2, 1, 0], true) // [3, 2, 2, 1, 1, 0] */
export const interleavePairs = (xs: number[], keepLast: boolean): number[] => {
  const out = [xs[0]];
  const end = keepLast ? xs.length - 1 : xs.length;
  for (let i = 1; i < end; i++) out.push(xs[i], xs[i]);
  if (keepLast) out.push(xs[xs.length - 1]);
  return out;
};

/**
 * Heun sampler (2 model evaluations per noise level).
 *
 * @example
 * const s = new HeunDiscreteScheduler({ beta_schedule: "scaled_linear" });
 * s.setTimesteps(10); // 19 timesteps
 * for (const t of s.timesteps) x = s.step(unet(s.scaleModelInput(x, t), t), t, x).prevSample;
 */
export class HeunDiscreteScheduler extends SigmaScheduler<HeunConfig> {
  override readonly order = 2;
  private prevDerivative: Tensor | null = null;
  private dt: number | null = null;
  private firstSample: Tensor | null = null;

  constructor(config: Partial<HeunConfig> & Record<string, unknown> = {}) {
    super("HeunDiscreteScheduler", SPEC, config);
    this.setTimesteps(this.config.num_train_timesteps);
    this.numInferenceSteps = null;
  }

  /** True when the next `step` is an Euler predictor (no pending corrector). */
  get stateInFirstOrder(): boolean {
    return this.dt === null;
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    let sigmas: number[];
    let timesteps: number[];
    if (opts.timesteps) {
      timesteps = opts.timesteps.map(f32);
      sigmas = numpyInterp(timesteps, this.trainSigmas.map((_, i) => i), this.trainSigmas);
      numInferenceSteps = timesteps.length;
    } else {
      this.stepsArgument(numInferenceSteps);
      ({ sigmas, timesteps } = this.inferenceSchedule(numInferenceSteps));
    }
    this.sigmas = interleavePairs(sigmas.concat([0]).map(f32), true);
    this.timesteps = interleavePairs(timesteps.map(f32), false);
    this.startSchedule(numInferenceSteps);
  }

  protected resetState(): void {
    this.prevDerivative?.dispose();
    this.prevDerivative = null;
    this.firstSample?.dispose();
    this.firstSample = null;
    this.dt = null;
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    const c = this.config;
    const first = this.stateInFirstOrder;
    const sigma = first ? this.sigmas![i] : this.sigmas![i - 1];
    const sigmaNext = first ? this.sigmas![i + 1] : this.sigmas![i];
    const sigmaHat = sigma; // γ = 0: σ̂ = σ(γ + 1)
    const out = tidy(() => {
      // 1. x₀ at the predictor (σ̂) or corrector (σ_{i+1}) point, clipped if `clip_sample`
      const sigmaInput = first ? sigmaHat : sigmaNext;
      const x0 = this.clipOrThreshold(this.predictX0(c.prediction_type, modelOutput, sample, sigmaInput, sigmaInput));
      let prev: Tensor;
      if (first) {
        // 2. Euler predictor: d = (x - x₀)/σ̂, x' = x + d·(σ_{i+1} - σ̂)
        const d = sample.sub(x0).div(sigmaHat);
        const dt = sub32(sigmaNext, sigmaHat);
        this.prevDerivative = keep(d);
        this.dt = dt;
        this.firstSample = keep(sample.clone());
        prev = sample.add(d.mul(dt));
      } else {
        // 3. trapezoidal corrector: average of both slopes from the stored x
        const d = sample.sub(x0).div(sigmaNext).add(this.prevDerivative!).div(2);
        prev = this.firstSample!.add(d.mul(this.dt!));
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
    if (!first) this.resetState();
    this._stepIndex = i + 1;
    return out;
  }
}
