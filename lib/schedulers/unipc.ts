/**
 * UniPC: Zhao, Bai, Rao, Zhou & Lu (2023), "UniPC: A Unified Predictor-Corrector Framework
 * for Fast Sampling of Diffusion Models", https://arxiv.org/abs/2302.04867 — the UniP-p
 * predictor and UniC-p corrector (Algorithms 2–3) with B(h) = h (bh1) or e^h - 1 (bh2),
 * mirroring diffusers' `UniPCMultistepScheduler`.
 */
import { Tensor, keep, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, bool, int, intArray, invalid, num, oneOf } from "./config";
import { div32, expm1_32, f32, mul32, pow32, sub32 } from "./f32";
import { SolverConfig, SolverScheduler } from "./solver_base";
import { dpmTimesteps, TimestepSpacing } from "./sigmas";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec, thresholdSpec } from "./specs";

export interface UniPCConfig extends SolverConfig {
  predict_x0: boolean;
  solver_type: "bh1" | "bh2";
  lower_order_final: boolean;
  disable_corrector: number[];
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  final_sigmas_type: "zero" | "sigma_min";
  rescale_betas_zero_snr: boolean;
  shift_terminal: number | null;
}

const SPEC: Spec = {
  ...betaSpec(0.0001, 0.02, "linear"),
  solver_order: int(2, { min: 1 }),
  ...predictionSpec(["epsilon", "sample", "v_prediction", "flow_prediction"]),
  ...thresholdSpec(),
  predict_x0: bool(true),
  solver_type: oneOf(["bh1", "bh2", "midpoint", "heun", "logrho"], "bh2", { listed: ["bh1", "bh2"] }),
  lower_order_final: bool(true),
  disable_corrector: intArray([]),
  solver_p: { default: null, nullable: true, check: (v) => (v === null ? null : "null (solver_p is not supported)") },
  ...sigmaKindSpec(),
  use_flow_sigmas: bool(false),
  flow_shift: num(1.0, { gt: 0 }),
  ...spacingSpec("linspace"),
  final_sigmas_type: oneOf(["zero", "sigma_min"], "zero"),
  rescale_betas_zero_snr: bool(false),
  use_dynamic_shifting: bool(false),
  time_shift_type: oneOf(["exponential", "linear"], "exponential"),
  sigma_min: num(null, { gt: 0, nullable: true }),
  sigma_max: num(null, { gt: 0, nullable: true }),
  shift_terminal: num(null, { nullable: true }),
};

/** Solves the small dense system R·x = b (Gaussian elimination, float64, result float32). @example solveSmall([[1, 0], [0, 2]], [1, 1]) // [1, 0.5] */
export function solveSmall(R: number[][], b: number[]): number[] {
  const n = b.length;
  const A = R.map((row, i) => [...row, b[i]]);
  for (let col = 0; col < n; col++) {
    let piv = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(A[r][col]) > Math.abs(A[piv][col])) piv = r;
    [A[col], A[piv]] = [A[piv], A[col]];
    for (let r = col + 1; r < n; r++) {
      const f = A[r][col] / A[col][col];
      for (let k = col; k <= n; k++) A[r][k] -= f * A[col][k];
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = A[r][n];
    for (let k = r + 1; k < n; k++) s -= A[r][k] * x[k];
    x[r] = s / A[r][r];
  }
  return x.map(f32);
}

/**
 * UniPC multistep sampler (predictor UniP + corrector UniC at every step but the first and
 * those in `disable_corrector`).
 *
 * @example
 * const s = new UniPCMultistepScheduler({ solver_order: 2, solver_type: "bh2" });
 * s.setTimesteps(10);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x).prevSample;
 */
export class UniPCMultistepScheduler extends SolverScheduler<UniPCConfig> {
  private lastSample: Tensor | null = null;
  private thisOrder = 1;

  constructor(config: Partial<UniPCConfig> & Record<string, unknown> = {}) {
    super("UniPCMultistepScheduler", SPEC, config, (c) => {
      if (c.solver_type !== "bh1" && c.solver_type !== "bh2") c.solver_type = "bh2";
      if (!c.predict_x0 && c.prediction_type === "flow_prediction")
        throw invalid("UniPCMultistepScheduler", "config.prediction_type", "epsilon, sample or v_prediction when predict_x0 is false", c.prediction_type);
      if (c.shift_terminal != null && !c.use_flow_sigmas)
        throw invalid("UniPCMultistepScheduler", "config.shift_terminal", "null unless use_flow_sigmas", c.shift_terminal);
    });
    if (this.config.rescale_betas_zero_snr) this.patchZeroSnr();
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    if (c.use_dynamic_shifting && opts.mu === undefined) throw new Error(`${this.className}: setTimesteps needs opts.mu when config.use_dynamic_shifting is true`);
    this.stepsArgument(numInferenceSteps);
    const timesteps = dpmTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset);
    const s = this.solverSchedule(numInferenceSteps, {
      timesteps,
      roundKarras: true,
      unipcFlow: { mu: opts.mu, shiftTerminal: c.shift_terminal },
    });
    const last = c.final_sigmas_type === "zero" ? 0 : s.branch === "interp" ? this.trainSigmas[0] : s.sigmas[s.sigmas.length - 1];
    this.applySchedule(s, last);
  }

  protected resetState(): void {
    super.resetState();
    this.lastSample?.dispose();
    this.lastSample = null;
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, _opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const i = this.initStepIndex(t, true);
    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== null;
    const out = tidy(() => {
      // 1. convert the model output (x₀ for predict_x0, else ε)
      const converted = c.predict_x0 ? this.dataPrediction(modelOutput, sample, i) : this.noisePrediction(modelOutput, sample, i);
      // 2. UniC: correct x_t with the new model output
      let x = sample;
      if (useCorrector) x = this.corrector(i, converted, this.lastSample!, this.thisOrder);
      // 3. history and the order of this step (warm-up and lower_order_final)
      this.pushModelOutput(converted);
      const order = c.lower_order_final ? Math.min(c.solver_order, this.timesteps.length - i) : c.solver_order;
      this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
      this.lastSample?.dispose();
      this.lastSample = keep(x === sample ? sample.clone() : x);
      // 4. UniP: predict x_{t-1}
      return this.predictor(i, this.lastSample, this.thisOrder);
    });
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this._stepIndex = i + 1;
    return { prevSample: out, predOriginalSample: null };
  }

  /** R (powers of r_k) and b (φ-functions over B(h)) of the UniPC linear system, float32. */
  private system(h: number, rks: number[], order: number): { R: number[][]; b: number[]; hPhi1: number; Bh: number } {
    const hh = this.config.predict_x0 ? -h : h;
    const hPhi1 = expm1_32(hh);
    let hPhiK = sub32(div32(hPhi1, hh), 1);
    let factorial = 1;
    const Bh = this.config.solver_type === "bh1" ? hh : expm1_32(hh);
    const R: number[][] = [];
    const b: number[] = [];
    for (let k = 1; k <= order; k++) {
      R.push(rks.map((r) => pow32(r, k - 1)));
      b.push(div32(mul32(hPhiK, factorial), Bh));
      factorial *= k + 1;
      hPhiK = sub32(div32(hPhiK, hh), f32(1 / factorial));
    }
    return { R, b, hPhi1, Bh };
  }

  /**
   * What UniP and UniC share for the step from sigma index j (s0) to j + 1 (t), with the
   * newest model output m0 at s0: the ratios r_k = (λ_{s_k} - λ_{s0})/h and differences
   * D1_k = (m_k - m0)/r_k of the `order - 1` older outputs, the linear system, the first-order
   * (DDIM) part x_t' of the update from `x`, and the weight B(h)·(α_t or σ_t) of the
   * higher-order correction.
   */
  private expansion(j: number, x: Tensor, order: number): { m0: Tensor; D1s: Tensor[]; R: number[][]; b: number[]; xt: Tensor; weight: number } {
    const m0 = this.history(0);
    const t = this.lambdasAt(j + 1);
    const s0 = this.lambdasAt(j);
    const h = sub32(t.lambdaT, s0.lambdaT);
    const rks: number[] = [];
    const D1s: Tensor[] = [];
    for (let k = 1; k < order; k++) {
      const rk = div32(sub32(this.lambdasAt(j - k).lambdaT, s0.lambdaT), h);
      rks.push(rk);
      D1s.push(this.history(k).sub(m0).div(rk));
    }
    rks.push(1);
    const { R, b, hPhi1, Bh } = this.system(h, rks, order);
    const predX0 = this.config.predict_x0;
    const xt = predX0
      ? x.mul(div32(t.sigmaT, s0.sigmaT)).sub(m0.mul(mul32(t.alphaT, hPhi1)))
      : x.mul(div32(t.alphaT, s0.alphaT)).sub(m0.mul(mul32(t.sigmaT, hPhi1)));
    return { m0, D1s, R, b, xt, weight: mul32(predX0 ? t.alphaT : t.sigmaT, Bh) };
  }

  /** UniP-p (B(h) version): x_t from x_{s0} and the last `order` model outputs. */
  private predictor(i: number, x: Tensor, order: number): Tensor {
    const { D1s, R, b, xt, weight } = this.expansion(i, x, order);
    if (D1s.length === 0) return xt; // pred_res = 0
    const rhos = order === 2 ? [0.5] : solveSmall(R.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1));
    return xt.sub(weightedSum(rhos, D1s).mul(weight));
  }

  /** UniC-p (B(h) version): x_t corrected with `modelT`, the model output at x_t; the history ends at s0. */
  private corrector(i: number, modelT: Tensor, last: Tensor, order: number): Tensor {
    const { m0, D1s, R, b, xt, weight } = this.expansion(i - 1, last, order);
    const rhos = order === 1 ? [0.5] : solveSmall(R, b);
    const D1t = modelT.sub(m0);
    const corr = D1s.length > 0 ? weightedSum(rhos.slice(0, -1), D1s).add(D1t.mul(rhos[rhos.length - 1])) : D1t.mul(rhos[rhos.length - 1]);
    return xt.sub(corr.mul(weight));
  }
}

/** Σ_k ρ_k D_k (diffusers' `einsum("k,bkc...->bc...")`). */
function weightedSum(rhos: number[], Ds: Tensor[]): Tensor {
  let acc = Ds[0].mul(rhos[0]);
  for (let k = 1; k < Ds.length; k++) acc = acc.add(Ds[k].mul(rhos[k]));
  return acc;
}
