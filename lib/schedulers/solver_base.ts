/**
 * Base of the exponential-integrator solvers on the VP diffusion ODE (DPM-Solver, DPM-Solver++,
 * UniPC, DEIS): x_t = α_t x₀ + σ_t ε with log-SNR λ_t = log α_t - log σ_t. Sigmas here are the
 * VE noise levels σ = σ_t/α_t; `alphaSigma` maps them back (or to α = 1-σ for flow sigmas).
 * Provides the inference sigma schedule shared by the family, model-output conversion,
 * multistep history and the forward process.
 */
import { Tensor, keep, tidy } from "../tensor";
import { BetaConfig, BetaScheduler, ThresholdConfig, TimestepsLike, ZERO_SNR_LAST_ALPHA_CUMPROD, perSample, timestepList, vpAlphaSigma } from "./base";
import { Spec, invalid } from "./config";
import { f32, log32, sqrt32, sub32 } from "./f32";
import { numpyInterp, numpyLinspace } from "./numpy";
import { trainSigmas } from "./schedules";
import { betaSigmas, exponentialSigmas, flowShift, karrasSigmas, roundTimesteps, sigmaToT, stretchShiftToTerminal, timeShift } from "./sigmas";
import { checkOneSigmaKind, sigmaKind } from "./specs";

/** α_t, σ_t and λ_t = log α_t − log σ_t of one point of the schedule (float32). */
export interface Lambdas {
  alphaT: number;
  sigmaT: number;
  lambdaT: number;
}

export interface SolverConfig extends BetaConfig, ThresholdConfig {
  solver_order: number;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  use_flow_sigmas: boolean;
  flow_shift: number;
  use_dynamic_shifting: boolean;
  time_shift_type: "exponential" | "linear";
  sigma_min?: number | null;
  sigma_max?: number | null;
}

/** How a solver builds its inference sigmas (the family's variants of `set_timesteps`). */
export interface SolverScheduleOptions {
  /** Spaced integer timesteps (the default schedule's). */
  timesteps: number[];
  /** Round Karras/Lu timesteps (DPM-Solver skips it for squaredcos_cap_v2). */
  roundKarras: boolean;
  /** Use Lu et al.'s uniform-λ schedule. */
  luLambdas?: boolean;
  /** Flow sigmas in UniPC's variant (dynamic shift, terminal stretch, ε clamp). */
  unipcFlow?: { mu?: number; shiftTerminal: number | null };
}

/** Inference sigmas (float64, without the final one), timesteps, and which branch built them. */
export interface SolverSchedule {
  sigmas: number[];
  timesteps: number[];
  branch: "karras" | "exponential" | "beta" | "lu" | "flow" | "interp";
}

/**
 * Base of DPM-Solver, DPM-Solver singlestep, UniPC and DEIS (see the module doc).
 * @example
 * const s = new DPMSolverMultistepScheduler({ solver_order: 2 });
 * s.setTimesteps(20); // s.sigmas has 21 entries, the last one 0
 */
export abstract class SolverScheduler<C extends SolverConfig> extends BetaScheduler<C> {
  protected trainSigmas: number[];
  protected logSigmas: number[];
  /** λ_t per training timestep (float32), for `lambda_min_clipped`. */
  protected lambdaT: number[];
  /** `flow_shift`, replaced by e^μ when `setTimesteps` gets `mu` (diffusers writes it into the config). */
  protected flowShiftValue: number;
  /** Converted model outputs of the last `solver_order` steps, oldest first (null = empty). */
  protected modelOutputs: (Tensor | null)[] = [];
  protected lowerOrderNums = 0;

  protected constructor(className: string, spec: Spec, config: unknown, fixup?: (c: Record<string, unknown>) => void) {
    super(className, spec, config, fixup);
    checkOneSigmaKind(className, this.config as unknown as Record<string, unknown>);
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.logSigmas = this.trainSigmas.map(log32);
    this.lambdaT = trainLambdas(this.alphasCumprod);
    this.flowShiftValue = (this.config as unknown as SolverConfig).flow_shift;
    const T = (this.config as unknown as SolverConfig).num_train_timesteps;
    this.timesteps = Array.from({ length: T }, (_, i) => T - 1 - i);
    this.sigmas = this.trainSigmas;
    this.modelOutputs = new Array((this.config as unknown as SolverConfig).solver_order).fill(null);
  }

  /** Zero-SNR fix-up: ᾱ_T = 2⁻²⁴ so σ_T stays finite (DPM-Solver, UniPC). */
  protected patchZeroSnr(): void {
    this.alphasCumprod[this.alphasCumprod.length - 1] = ZERO_SNR_LAST_ALPHA_CUMPROD;
    this.trainSigmas = trainSigmas(this.alphasCumprod);
    this.logSigmas = this.trainSigmas.map(log32);
    this.lambdaT = trainLambdas(this.alphasCumprod);
    this.sigmas = this.trainSigmas;
  }

  /**
   * Resolution-dependent shifting (`use_dynamic_shifting`): `setTimesteps`' μ replaces
   * `flow_shift` by e^μ for this and later schedules, as diffusers writes it into the config.
   */
  protected applyMu(mu: number | undefined): void {
    if (mu === undefined) return;
    if (!(this.config as unknown as SolverConfig).use_dynamic_shifting)
      throw invalid(this.className, "setTimesteps: mu", "omitted unless config.use_dynamic_shifting", mu);
    this.flowShiftValue = Math.exp(mu);
  }

  /** (α_t, σ_t) for a VE sigma: VP `1/√(σ²+1)`, or `(1-σ, σ)` with flow sigmas; float32. */
  protected alphaSigma(sigma: number): [number, number] {
    if ((this.config as unknown as SolverConfig).use_flow_sigmas) return [f32(1 - sigma), sigma];
    return vpAlphaSigma(sigma);
  }

  /** α_t, σ_t and λ_t of the j-th inference sigma (float32). */
  protected lambdasAt(j: number): Lambdas {
    const [alphaT, sigmaT] = this.alphaSigma(this.sigmas![j]);
    return { alphaT, sigmaT, lambdaT: sub32(log32(alphaT), log32(sigmaT)) };
  }

  /** λ = log α - log σ (float32; +∞ at σ = 0). */
  protected lambdaOf(sigma: number): number {
    const [a, s] = this.alphaSigma(sigma);
    return sub32(log32(a), log32(s));
  }

  /** Last timestep after `lambda_min_clipped` (searchsorted on the flipped λ_t). */
  protected clippedLast(lambdaMinClipped: number): number {
    let count = 0;
    for (let i = this.lambdaT.length - 1; i >= 0; i--) if (this.lambdaT[i] < lambdaMinClipped) count++;
    return this.lambdaT.length - count;
  }

  /** The family's sigma schedule: Karras / exponential / beta / Lu / flow / interpolated. */
  protected solverSchedule(n: number, o: SolverScheduleOptions): SolverSchedule {
    const c = this.config as unknown as SolverConfig;
    const T = c.num_train_timesteps;
    const kind = sigmaKind(c);
    const lo = c.sigma_min ?? this.trainSigmas[0];
    const hi = c.sigma_max ?? this.trainSigmas[this.trainSigmas.length - 1];
    const toT = (ss: number[]) => ss.map((s) => sigmaToT(s, this.logSigmas));
    if (kind === "karras") {
      let sigmas = karrasSigmas(lo, hi, n);
      if (o.unipcFlow && c.use_flow_sigmas) {
        sigmas = sigmas.map((s) => s / (s + 1));
        return { sigmas, timesteps: sigmas.map((s) => s * T), branch: "karras" };
      }
      const ts = toT(sigmas);
      return { sigmas, timesteps: o.roundKarras ? roundTimesteps(ts) : ts, branch: "karras" };
    }
    if (o.luLambdas) {
      const lmax = this.logSigmas[this.logSigmas.length - 1];
      const lmin = this.logSigmas[0];
      const sigmas = numpyLinspace(0, 1, n).map((r) => Math.exp(lmax + r * (lmin - lmax)));
      const ts = toT(sigmas);
      return { sigmas, timesteps: o.roundKarras ? roundTimesteps(ts) : ts, branch: "lu" };
    }
    if (kind === "exponential" || kind === "beta") {
      const sigmas = kind === "exponential" ? exponentialSigmas(lo, hi, n) : betaSigmas(lo, hi, n);
      return { sigmas, timesteps: toT(sigmas), branch: kind };
    }
    if (c.use_flow_sigmas) {
      if (o.unipcFlow) {
        let sigmas = numpyLinspace(1, 1 / T, n + 1).slice(0, -1);
        sigmas = c.use_dynamic_shifting
          ? sigmas.map((s) => timeShift(c.time_shift_type, o.unipcFlow!.mu!, 1, s))
          : sigmas.map((s) => flowShift(s, this.flowShiftValue));
        if (o.unipcFlow.shiftTerminal) sigmas = stretchShiftToTerminal(sigmas, o.unipcFlow.shiftTerminal);
        if (Math.abs(sigmas[0] - 1) < 1e-6) sigmas[0] -= 1e-6; // keep log α finite in the first update
        return { sigmas, timesteps: sigmas.map((s) => s * T), branch: "flow" };
      }
      const raw = numpyLinspace(1, 1 / T, n + 1).map((a) => 1 - a);
      const sigmas = raw.map((s) => flowShift(s, this.flowShiftValue)).reverse().slice(0, -1);
      return { sigmas, timesteps: sigmas.map((s) => s * T), branch: "flow" };
    }
    const idx = this.trainSigmas.map((_, i) => i);
    return { sigmas: numpyInterp(o.timesteps, idx, this.trainSigmas), timesteps: o.timesteps, branch: "interp" };
  }

  /** Stores the schedule: float32 sigmas (with `last` appended), int64 timesteps (truncated). */
  protected applySchedule(s: SolverSchedule, last: number): void {
    this.sigmas = s.sigmas.concat([last]).map(f32);
    this.timesteps = s.timesteps.map((t) => Math.trunc(t));
    this.numInferenceSteps = this.timesteps.length;
    this.resetState();
    this._stepIndex = null;
    this._beginIndex = null;
  }

  protected resetState(): void {
    for (const m of this.modelOutputs) m?.dispose();
    this.modelOutputs = new Array((this.config as unknown as SolverConfig).solver_order).fill(null);
    this.lowerOrderNums = 0;
  }

  /** The k-th newest converted model output of the history (0: this step's). */
  protected history(k: number): Tensor {
    return this.modelOutputs[this.modelOutputs.length - 1 - k]!;
  }

  /** Appends a converted model output to the history (kept), dropping the oldest. */
  protected pushModelOutput(m: Tensor): void {
    const old = this.modelOutputs.shift();
    old?.dispose();
    this.modelOutputs.push(keep(m));
  }

  /** x₀ from the model output at sigma index `i` (ε, x₀, v or flow velocity), optionally thresholded. */
  protected dataPrediction(modelOutput: Tensor, sample: Tensor, i: number, learnedVariance = false): Tensor {
    const c = this.config as unknown as SolverConfig;
    const sigma = this.sigmas![i];
    const [a, s] = this.alphaSigma(sigma);
    let x0: Tensor;
    if (c.prediction_type === "epsilon") {
      const eps = learnedVariance ? modelOutput.slice(1, 0, 3) : modelOutput;
      x0 = sample.sub(eps.mul(s)).div(a);
    } else if (c.prediction_type === "sample") x0 = modelOutput.clone();
    else if (c.prediction_type === "v_prediction") x0 = sample.mul(a).sub(modelOutput.mul(s));
    else x0 = sample.sub(modelOutput.mul(sigma)); // flow_prediction
    return c.thresholding ? this.thresholdSample(x0) : x0;
  }

  /** ε from the model output at sigma index `i` (DPM-Solver's noise-prediction form). */
  protected noisePrediction(modelOutput: Tensor, sample: Tensor, i: number, learnedVariance = false): Tensor {
    const c = this.config as unknown as SolverConfig;
    const [a, s] = this.alphaSigma(this.sigmas![i]);
    let eps: Tensor;
    if (c.prediction_type === "epsilon") eps = learnedVariance ? modelOutput.slice(1, 0, 3) : modelOutput.clone();
    else if (c.prediction_type === "sample") eps = sample.sub(modelOutput.mul(a)).div(s);
    else eps = modelOutput.mul(a).add(sample.mul(s));
    if (c.thresholding) {
      const x0 = this.thresholdSample(sample.sub(eps.mul(s)).div(a));
      eps = sample.sub(x0.mul(a)).div(s);
    }
    return eps;
  }

  /** `α_t · x₀ + σ_t · ε` with (α_t, σ_t) from the sigma of each timestep. */
  addNoise(original: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor {
    const pairs = this.noiseIndices(timestepList(timesteps), true).map((i) => this.alphaSigma(this.sigmas![i]));
    return tidy(() => perSample(pairs.map((p) => p[0]), original).mul(original).add(perSample(pairs.map((p) => p[1]), original).mul(noise)));
  }
}

/**
 * λ_t = log √ᾱ_t - log √(1-ᾱ_t) of every training timestep (float32), as diffusers'
 * `lambda_t` for `lambda_min_clipped`.
 * @example trainLambdas([0.5]) // [0]
 */
export function trainLambdas(alphasCumprod: number[]): number[] {
  return alphasCumprod.map((a) => sub32(log32(sqrt32(a)), log32(sqrt32(f32(1 - a)))));
}

/** `torch.exp(x) - 1.0` on a float32 0-d tensor (not expm1: diffusers subtracts). @example em1(0.5) */
export const em1 = (x: number): number => f32(Math.fround(Math.exp(x)) - 1);
