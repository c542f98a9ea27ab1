/**
 * PNDM: Liu, Ren, Lin & Zhao (2022), "Pseudo Numerical Methods for Diffusion Models on
 * Manifolds", https://arxiv.org/abs/2202.09778 — Runge–Kutta warm-up (PRK, 4 model calls per
 * step) then linear multistep (PLMS, Adams–Bashforth up to 4th order) on the DDIM transfer
 * φ(x_t, ε, t → t-δ) of eq. (11), mirroring diffusers' `PNDMScheduler`.
 */
import { Tensor, keep, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, timestepValue } from "./base";
import { Spec, bool } from "./config";
import { add32, div32, f32, mul32, sqrt32, sub32 } from "./f32";
import { betaSpec, predictionSpec, spacingSpec } from "./specs";
import { ddimTimesteps, TimestepSpacing } from "./sigmas";

export interface PNDMConfig extends BetaConfig {
  skip_prk_steps: boolean;
  set_alpha_to_one: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  skip_prk_steps: bool(false),
  set_alpha_to_one: bool(false),
  ...predictionSpec(["epsilon", "v_prediction"]),
  ...spacingSpec("leading"),
};

/**
 * PNDM sampler (PRK warm-up unless `skip_prk_steps`, then PLMS).
 *
 * @example
 * const s = new PNDMScheduler({ skip_prk_steps: true, steps_offset: 1 });
 * s.setTimesteps(50);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x).prevSample;
 */
export class PNDMScheduler extends BetaScheduler<PNDMConfig> {
  readonly finalAlphaCumprod: number;
  readonly pndmOrder = 4;
  prkTimesteps: number[] = [];
  plmsTimesteps: number[] = [];
  private counter = 0;
  private ets: Tensor[] = [];
  private curModelOutput: Tensor | null = null;
  private curSample: Tensor | null = null;

  constructor(config: Partial<PNDMConfig> & Record<string, unknown> = {}) {
    super("PNDMScheduler", SPEC, config);
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
    this.timesteps = Array.from({ length: this.config.num_train_timesteps }, (_, i) => this.config.num_train_timesteps - 1 - i);
  }

  setTimesteps(numInferenceSteps: number, _opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    this.stepsArgument(numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
    const ts = ddimTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset).reverse(); // ascending
    const n = ts.length;
    if (c.skip_prk_steps) {
      // plms warm-up repeats the second-to-last timestep (diffusers' trick for 1st order start)
      this.prkTimesteps = [];
      this.plmsTimesteps = [...ts.slice(0, n - 1), ...ts.slice(Math.max(0, n - 2), n - 1), ...ts.slice(n - 1)].reverse(); // numpy slices: no repeat when n = 1
    } else {
      const half = Math.floor(Math.floor(c.num_train_timesteps / numInferenceSteps) / 2);
      const last = ts.slice(-this.pndmOrder);
      const prk: number[] = [];
      for (const t of last) prk.push(t, t);
      for (let i = 0; i < prk.length; i++) prk[i] += i % 2 === 0 ? 0 : half;
      const dup: number[] = [];
      for (const t of prk.slice(0, -1)) dup.push(t, t);
      this.prkTimesteps = dup.slice(1, -1).reverse();
      this.plmsTimesteps = ts.slice(0, -3).reverse();
    }
    this.timesteps = [...this.prkTimesteps, ...this.plmsTimesteps];
    this.resetState();
  }

  protected resetState(): void {
    for (const e of this.ets) e.dispose();
    this.ets = [];
    this.curModelOutput?.dispose();
    this.curModelOutput = null;
    this.curSample?.dispose();
    this.curSample = null;
    this.counter = 0;
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const tt = timestepValue(t);
    const prev = this.counter < this.prkTimesteps.length && !this.config.skip_prk_steps
      ? this.stepPrk(modelOutput, tt, sample)
      : this.stepPlms(modelOutput, tt, sample);
    return { prevSample: prev, predOriginalSample: null };
  }

  /** Runge–Kutta (4 evaluations per δ) on the ε-ODE, eq. (13). */
  private stepPrk(modelOutput: Tensor, t: number, sample: Tensor): Tensor {
    // 1. previous step value: every other PRK call moves half a stride
    const ratio = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps!);
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(ratio / 2);
    const prevT = t - diffToPrev;
    const t0 = this.prkTimesteps[Math.floor(this.counter / 4) * 4];
    const k = this.counter % 4;
    let eps: Tensor;
    const out = tidy(() => {
      // 2. accumulate the RK4 slope (1/6, 1/3, 1/3, 1/6) from the block's start sample
      if (k === 0) {
        this.replaceCur(modelOutput.mul(f32(1 / 6)));
        this.ets.push(keep(modelOutput.clone()));
        this.curSample?.dispose();
        this.curSample = keep(sample.clone());
        eps = modelOutput;
      } else if (k === 1 || k === 2) {
        this.replaceCur(this.curModelOutput!.add(modelOutput.mul(f32(1 / 3))));
        eps = modelOutput;
      } else {
        eps = this.curModelOutput!.add(modelOutput.mul(f32(1 / 6)));
        this.curModelOutput!.dispose();
        this.curModelOutput = null;
      }
      return this.prevSample(this.curSample ?? sample, t0, prevT, eps);
    });
    this.counter += 1;
    return out;
  }

  private replaceCur(next: Tensor): void {
    const old = this.curModelOutput;
    this.curModelOutput = keep(next);
    old?.dispose();
  }

  /** Linear multistep (Adams–Bashforth on ε), eq. (12). */
  private stepPlms(modelOutput: Tensor, t: number, sample: Tensor): Tensor {
    if (!this.config.skip_prk_steps && this.ets.length < 3)
      throw new Error(`${this.className}: PLMS needs 3 PRK warm-up steps first; step through scheduler.timesteps in order`);
    // 1. previous step value (the second warm-up call of skip_prk_steps redoes the first step)
    const ratio = Math.floor(this.config.num_train_timesteps / this.numInferenceSteps!);
    let prevT = t - ratio;
    let cur = t;
    if (this.counter !== 1) {
      while (this.ets.length > 3) this.ets.shift()!.dispose();
      this.ets.push(keep(modelOutput.clone()));
    } else {
      prevT = t;
      cur = t + ratio;
    }
    const e = this.ets;
    // 2. Adams–Bashforth combination of the last 1–4 ε
    const out = tidy(() => {
      let eps: Tensor;
      let x = sample;
      if (e.length === 1 && this.counter === 0) {
        eps = modelOutput;
        this.curSample?.dispose();
        this.curSample = keep(sample.clone());
      } else if (e.length === 1 && this.counter === 1) {
        eps = modelOutput.add(e[0]).div(2);
        x = this.curSample!;
      } else if (e.length === 2) eps = e[1].mul(3).sub(e[0]).div(2);
      else if (e.length === 3) eps = e[2].mul(23).sub(e[1].mul(16)).add(e[0].mul(5)).div(12);
      else eps = e[3].mul(55).sub(e[2].mul(59)).add(e[1].mul(37)).sub(e[0].mul(9)).mul(f32(1 / 24));
      return this.prevSample(x, cur, prevT, eps);
    });
    if (e.length === 1 && this.counter === 1) {
      this.curSample?.dispose();
      this.curSample = null;
    }
    this.counter += 1;
    return out;
  }

  /** φ(x_t, ε, t → t_prev), eq. (11) of the paper in diffusers' arrangement. */
  private prevSample(sample: Tensor, t: number, prevT: number, eps: Tensor): Tensor {
    // 1. alphas, betas at t and t_prev
    const a = this.alphasCumprod[this.trainIndex(t)];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const bp = f32(1 - a);
    const bpp = f32(1 - ap);
    // 2. v-prediction → ε
    if (this.config.prediction_type === "v_prediction") eps = eps.mul(sqrt32(a)).add(sample.mul(sqrt32(bp)));
    // 3. x_{t_prev} = √(ᾱ_prev/ᾱ_t)·x_t - (ᾱ_prev - ᾱ_t)·ε / (ᾱ_t√(1-ᾱ_prev) + √(ᾱ_t(1-ᾱ_t)ᾱ_prev))
    const sampleCoeff = sqrt32(div32(ap, a));
    const denom = add32(mul32(a, sqrt32(bpp)), sqrt32(mul32(mul32(a, bp), ap)));
    return sample.mul(sampleCoeff).sub(eps.mul(sub32(ap, a)).div(denom));
  }
}
