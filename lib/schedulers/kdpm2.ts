/**
 * DPM-Solver-2 in Karras et al.'s σ-parameterisation, from k-diffusion's `sample_dpm_2` and
 * `sample_dpm_2_ancestral` (Crowson), after Lu et al. (2022), "DPM-Solver",
 * https://arxiv.org/abs/2206.00927, Algorithm 1 (order 2): an Euler half step to the
 * geometric-mean sigma σ_mid = √(σ_i σ_{i+1}), then a full step with the slope there. Each pair
 * of model calls shares a step, so `timesteps` interleaves the midpoints' timesteps.
 * Mirrors diffusers' `KDPM2DiscreteScheduler` and `KDPM2AncestralDiscreteScheduler`.
 */
import { Tensor, keep, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec } from "./config";
import { div32, exp32, f32, log32, mul32, pow32, sqrt32, sub32 } from "./f32";
import { SigmaConfig, SigmaScheduler } from "./sigma_base";
import { roundTimesteps, sigmaToT32 } from "./sigmas";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec } from "./specs";

export type KDPM2Config = SigmaConfig;

const SPEC: Spec = {
  ...betaSpec(0.00085, 0.012, "linear"),
  ...sigmaKindSpec(),
  ...predictionSpec(["epsilon", "v_prediction"]),
  ...spacingSpec("linspace"),
};

/** `exp(lerp(log a, log b, 0.5))` as torch computes it in float32 (`end - (end - start)·0.5`). @example logMidpoint32(4, 1) // 2 */
export function logMidpoint32(a: number, b: number): number {
  const la = log32(a);
  const lb = log32(b);
  return exp32(f32(lb - f32(f32(lb - la) * 0.5)));
}

/** `cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])`. */
const expand = (xs: number[]): number[] => [xs[0], ...xs.slice(1).flatMap((x) => [x, x]), xs[xs.length - 1]];

abstract class KDPM2Base extends SigmaScheduler<KDPM2Config> {
  override readonly order = 2;
  /** Interpolated (midpoint) sigmas, aligned with `sigmas`. */
  sigmasInterpol: number[] = [];
  protected stored: Tensor | null = null;

  /** True when the next `step` is the first of a pair. */
  get stateInFirstOrder(): boolean {
    return this.stored === null;
  }

  protected resetState(): void {
    this.stored?.dispose();
    this.stored = null;
  }

  /** Sigmas (float32, with the final 0) and float timesteps of the plain schedule. */
  protected baseSchedule(n: number): { sigmas: number[]; timesteps: number[] } {
    const s = this.inferenceSchedule(n);
    // KDPM2 rounds Karras timesteps; spacing-derived timesteps are float32 arrays
    const ts = s.kind === "karras" ? roundTimesteps(s.timesteps) : s.kind ? s.timesteps : s.timesteps.map(f32);
    return { sigmas: s.sigmas.concat([0]).map(f32), timesteps: ts };
  }

  protected interpTimesteps(sigmasInterpol: number[]): number[] {
    return sigmasInterpol.map((s) => sigmaToT32(s, this.logSigmas));
  }

  /**
   * One call of a DPM-Solver-2 pair (γ = 0, so σ̂ = σ): the first call takes an Euler half step
   * from σ to σ_mid and stores x; the second takes the slope at σ_mid and steps the stored x
   * from σ to `sigmaTarget` (σ_{i+1}, or σ_down for the ancestral sampler, which then adds
   * fresh noise σ_up·z).
   */
  protected pairStep(
    i: number,
    modelOutput: Tensor,
    sample: Tensor,
    sigma: number,
    sigmaMid: number,
    sigmaTarget: number,
    ancestral: { sigmaUp: number; opts: StepOptions } | null,
  ): StepOutput {
    const first = this.stateInFirstOrder;
    const sigmaHat = sigma; // γ = 0
    const out = tidy(() => {
      // 1. x₀ at σ̂ (first call) or at the midpoint (second call)
      const sigmaInput = first ? sigmaHat : sigmaMid;
      const x0 = this.predictX0(this.config.prediction_type, modelOutput, sample, sigmaInput, sigmaInput);
      let prev: Tensor;
      if (first) {
        // 2. Euler half step to σ_mid
        const d = sample.sub(x0).div(sigmaHat);
        this.stored = keep(sample.clone());
        prev = sample.add(d.mul(sub32(sigmaMid, sigmaHat)));
      } else {
        // 3. full step from the stored x with the midpoint slope, plus ancestral noise
        const d = sample.sub(x0).div(sigmaMid);
        prev = this.stored!.add(d.mul(sub32(sigmaTarget, sigmaHat)));
        if (ancestral) prev = prev.add(this.noiseLike(modelOutput, ancestral.opts).mul(ancestral.sigmaUp));
      }
      return { prevSample: prev, predOriginalSample: x0 };
    });
    if (!first) this.resetState();
    this._stepIndex = i + 1;
    return out;
  }
}

/**
 * DPM-Solver-2 (deterministic).
 *
 * @example
 * const s = new KDPM2DiscreteScheduler({ beta_schedule: "scaled_linear" });
 * s.setTimesteps(10);
 * for (const t of s.timesteps) x = s.step(unet(s.scaleModelInput(x, t), t), t, x).prevSample;
 */
export class KDPM2DiscreteScheduler extends KDPM2Base {
  constructor(config: Partial<KDPM2Config> & Record<string, unknown> = {}) {
    super("KDPM2DiscreteScheduler", SPEC, config);
    this.setTimesteps(this.config.num_train_timesteps);
    this.numInferenceSteps = null;
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.stepsArgument(numInferenceSteps);
    const { sigmas, timesteps } = this.baseSchedule(numInferenceSteps);
    // σ_mid,i = exp(lerp(log σ_i, log σ_{i-1}, ½)) (index 0 wraps around to the final 0: unused)
    const interpol = sigmas.map((s, i) => logMidpoint32(s, sigmas[(i - 1 + sigmas.length) % sigmas.length]));
    this.sigmas = expand(sigmas);
    this.sigmasInterpol = expand(interpol);
    const ti = this.interpTimesteps(interpol);
    const ts = [timesteps[0]];
    for (let k = 1; k < timesteps.length; k++) ts.push(ti[k], timesteps[k]);
    this.timesteps = ts;
    this.startSchedule(numInferenceSteps);
  }

  protected inputSigma(i: number): number {
    return this.stateInFirstOrder ? this.sigmas![i] : this.sigmasInterpol[i];
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    const sig = this.sigmas!;
    // σ, σ_mid and σ_{i+1} of the pair: the second call's index is one further on
    return this.stateInFirstOrder
      ? this.pairStep(i, modelOutput, sample, sig[i], this.sigmasInterpol[i + 1], sig[i + 1], null)
      : this.pairStep(i, modelOutput, sample, sig[i - 1], this.sigmasInterpol[i], sig[i], null);
  }
}

/**
 * DPM-Solver-2 ancestral: the second half-step lands on σ_down and adds fresh noise σ_up·z.
 *
 * @example
 * const s = new KDPM2AncestralDiscreteScheduler({ beta_schedule: "scaled_linear" });
 * s.setTimesteps(10);
 * x = s.step(eps, s.timesteps[0], x, { generator: new Generator(1) }).prevSample;
 */
export class KDPM2AncestralDiscreteScheduler extends KDPM2Base {
  sigmasUp: number[] = [];
  sigmasDown: number[] = [];

  constructor(config: Partial<KDPM2Config> & Record<string, unknown> = {}) {
    super("KDPM2AncestralDiscreteScheduler", SPEC, config);
    this.setTimesteps(this.config.num_train_timesteps);
    this.numInferenceSteps = null;
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    this.stepsArgument(numInferenceSteps);
    const { sigmas, timesteps } = this.baseSchedule(numInferenceSteps);
    const n = sigmas.length;
    const next = sigmas.map((_, i) => (i === n - 1 ? 0 : sigmas[i + 1]));
    // σ_up = √(σ_next²(σ² - σ_next²)/σ²), σ_down = √(σ_next² - σ_up²)
    const up = sigmas.map((s, i) => sqrt32(div32(mul32(pow32(next[i], 2), sub32(pow32(s, 2), pow32(next[i], 2))), pow32(s, 2))));
    const down = sigmas.map((_, i) => (i === n - 1 ? 0 : sqrt32(sub32(pow32(next[i], 2), pow32(up[i], 2)))));
    const interpol = sigmas.map((s, i) => (i >= n - 2 ? 0 : logMidpoint32(s, down[i])));
    this.sigmas = expand(sigmas);
    this.sigmasInterpol = expand(interpol);
    this.sigmasUp = expand(up);
    this.sigmasDown = expand(down);
    const ti = this.interpTimesteps(interpol);
    const ts = [timesteps[0]];
    for (let k = 1; k < timesteps.length; k++) ts.push(ti[k - 1], timesteps[k]);
    this.timesteps = ts;
    this.startSchedule(numInferenceSteps);
  }

  protected inputSigma(i: number): number {
    return this.stateInFirstOrder ? this.sigmas![i] : this.sigmasInterpol[i - 1];
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    // σ, σ_mid and σ_up of the pair (the second call's index is one further on), σ_down to land on
    const j = this.stateInFirstOrder ? i : i - 1;
    return this.pairStep(i, modelOutput, sample, this.sigmas![j], this.sigmasInterpol[j], this.sigmasDown[i - 1], { sigmaUp: this.sigmasUp[j], opts });
  }
}
