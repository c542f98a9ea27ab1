/**
 * DEIS: Zhang & Chen (2023), "Fast Sampling of Diffusion Models with Exponential Integrator",
 * https://arxiv.org/abs/2204.13902 — the log-ρ multistep variant (ρAB-DEIS, §4), integrating
 * the Lagrange polynomial of past ε predictions in log ρ with ρ = σ_t/α_t; mirrors diffusers'
 * `DEISMultistepScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, bool, int, num, oneOf } from "./config";
import { add32, div32, log32, mul32, pow32, sub32 } from "./f32";
import { SolverConfig, SolverScheduler, em1 } from "./solver_base";
import { dpmTimesteps, TimestepSpacing } from "./sigmas";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec, thresholdSpec } from "./specs";

export interface DEISConfig extends SolverConfig {
  algorithm_type: "deis";
  solver_type: "logrho";
  lower_order_final: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  solver_order: int(2, { min: 1 }),
  ...predictionSpec(["epsilon", "sample", "v_prediction", "flow_prediction"]),
  ...thresholdSpec(),
  algorithm_type: oneOf(["deis", "dpmsolver", "dpmsolver++"], "deis", { listed: ["deis"] }),
  solver_type: oneOf(["logrho", "midpoint", "heun", "bh1", "bh2"], "logrho", { listed: ["logrho"] }),
  lower_order_final: bool(true),
  ...sigmaKindSpec(),
  use_flow_sigmas: bool(false),
  flow_shift: num(1.0, { gt: 0 }),
  ...spacingSpec("linspace"),
  use_dynamic_shifting: bool(false),
  time_shift_type: oneOf(["exponential"], "exponential"),
};

/** ∫ (log t - log c)/(log b - log c) dt (2nd-order coefficient antiderivative), float32. */
function ind2(t: number, b: number, c: number): number {
  const lt = log32(t);
  const lb = log32(b);
  const lc = log32(c);
  return div32(mul32(t, sub32(add32(-lc, lt), 1)), sub32(lb, lc));
}

/** ∫ (log t - log c)(log t - log d)/((log b - log c)(log b - log d)) dt, float32. */
function ind3(t: number, b: number, c: number, d: number): number {
  const lt = log32(t);
  const lb = log32(b);
  const lc = log32(c);
  const ld = log32(d);
  // log c·(log d - log t + 1) - log d·log t + log d + log² t - 2 log t + 2, left to right as diffusers
  const numer = mul32(t, add32(sub32(add32(add32(sub32(mul32(lc, add32(sub32(ld, lt), 1)), mul32(ld, lt)), ld), pow32(lt, 2)), mul32(2, lt)), 2));
  const den = mul32(sub32(lb, lc), sub32(lb, ld));
  return div32(numer, den);
}

/**
 * DEIS multistep sampler (orders 1–3).
 *
 * @example
 * const s = new DEISMultistepScheduler({ solver_order: 3 });
 * s.setTimesteps(15);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x).prevSample;
 */
export class DEISMultistepScheduler extends SolverScheduler<DEISConfig> {
  constructor(config: Partial<DEISConfig> & Record<string, unknown> = {}) {
    super("DEISMultistepScheduler", SPEC, config, (c) => {
      c.algorithm_type = "deis";
      c.solver_type = "logrho";
    });
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    this.applyMu(opts.mu);
    this.stepsArgument(numInferenceSteps);
    const timesteps = dpmTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    const s = this.solverSchedule(numInferenceSteps, { timesteps, roundKarras: true });
    this.applySchedule(s, s.branch === "interp" ? this.trainSigmas[0] : s.sigmas[s.sigmas.length - 1]);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const i = this.initStepIndex(t, true);
    const n = this.timesteps.length;
    const lowerOrderFinal = i === n - 1 && c.lower_order_final && n < 15;
    const lowerOrderSecond = i === n - 2 && c.lower_order_final && n < 15;
    const out = tidy(() => {
      // 1. convert the model output to ε through the (thresholded) x₀
      const [a, s] = this.alphaSigma(this.sigmas![i]);
      const x0 = this.dataPrediction(modelOutput, sample, i);
      this.pushModelOutput(sample.sub(x0.mul(a)).div(s));
      // 2. first-, second- or third-order update
      if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) return this.firstOrder(i, sample);
      if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) return this.secondOrder(i, sample);
      return this.thirdOrder(i, sample);
    });
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this._stepIndex = i + 1;
    return { prevSample: out, predOriginalSample: null };
  }

  /** DEIS-1 (≡ DDIM): x_t = α_t/α_s x_s - σ_t (e^h - 1) ε. */
  private firstOrder(i: number, x: Tensor): Tensor {
    const t = this.lambdasAt(i + 1);
    const s = this.lambdasAt(i);
    const h = sub32(t.lambdaT, s.lambdaT);
    return x.mul(div32(t.alphaT, s.alphaT)).sub(this.history(0).mul(mul32(t.sigmaT, em1(h))));
  }

  private rhos(js: number[]): { a: number[]; r: number[] } {
    const pairs = js.map((j) => this.alphaSigma(this.sigmas![j]));
    return { a: pairs.map((p) => p[0]), r: pairs.map((p) => div32(p[1], p[0])) };
  }

  /** ρAB-DEIS-2: x_t = α_t (x_s/α_s + c₁ ε₀ + c₂ ε₁). */
  private secondOrder(i: number, x: Tensor): Tensor {
    const { a, r } = this.rhos([i + 1, i, i - 1]);
    const [rt, r0, r1] = r;
    const c1 = sub32(ind2(rt, r0, r1), ind2(r0, r0, r1));
    const c2 = sub32(ind2(rt, r1, r0), ind2(r0, r1, r0));
    return x.div(a[1]).add(this.history(0).mul(c1)).add(this.history(1).mul(c2)).mul(a[0]);
  }

  /** ρAB-DEIS-3: x_t = α_t (x_s/α_s + c₁ ε₀ + c₂ ε₁ + c₃ ε₂). */
  private thirdOrder(i: number, x: Tensor): Tensor {
    const { a, r } = this.rhos([i + 1, i, i - 1, i - 2]);
    const [rt, r0, r1, r2] = r;
    const c1 = sub32(ind3(rt, r0, r1, r2), ind3(r0, r0, r1, r2));
    const c2 = sub32(ind3(rt, r1, r2, r0), ind3(r0, r1, r2, r0));
    const c3 = sub32(ind3(rt, r2, r0, r1), ind3(r0, r2, r0, r1));
    return x.div(a[1]).add(this.history(0).mul(c1)).add(this.history(1).mul(c2)).add(this.history(2).mul(c3)).mul(a[0]);
  }
}
