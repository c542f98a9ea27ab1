/**
 * Multistep DPM-Solver: Lu et al. (2022), "DPM-Solver", https://arxiv.org/abs/2206.00927
 * (noise prediction, `dpmsolver`) and "DPM-Solver++", https://arxiv.org/abs/2211.01095
 * (data prediction, `dpmsolver++`, Algorithms 2 and the 3rd-order multistep of App. B), plus the
 * SDE variants (`sde-dpmsolver++` = DPM-Solver++(2M) SDE), mirroring diffusers'
 * `DPMSolverMultistepScheduler`. Orders 1–3 with `lower_order_final` warm-down. The update
 * formulas are in dpmsolver_update.ts, shared with the singlestep sampler.
 */
import { Tensor, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, bool, int, invalid, num, oneOf } from "./config";
import { SolverConfig, SolverScheduler } from "./solver_base";
import { dpmSolverStep } from "./dpmsolver_update";
import { dpmTimesteps, TimestepSpacing } from "./sigmas";
import { betaSpec, predictionSpec, sigmaKindSpec, spacingSpec, thresholdSpec } from "./specs";

export interface DPMSolverMultistepConfig extends SolverConfig {
  algorithm_type: "dpmsolver" | "dpmsolver++" | "sde-dpmsolver" | "sde-dpmsolver++";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_lu_lambdas: boolean;
  final_sigmas_type: "zero" | "sigma_min";
  lambda_min_clipped: number;
  variance_type: "learned" | "learned_range" | null;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
}

/** DPM-Solver's `algorithm_type` values. */
export const DPM_ALGORITHMS = ["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"] as const;

/** Spec of the DPM-Solver family's solver keys; `lowerOrderFinal` default differs per class. @example dpmSolverSpec(DPM_ALGORITHMS, true) */
export function dpmSolverSpec(algorithms: readonly string[], lowerOrderFinal: boolean): Spec {
  return {
    ...betaSpec(0.0001, 0.02, "linear"),
    solver_order: int(2, { min: 1 }),
    ...predictionSpec(["epsilon", "sample", "v_prediction", "flow_prediction"]),
    ...thresholdSpec(),
    algorithm_type: oneOf([...algorithms, "deis"], "dpmsolver++", { listed: algorithms }),
    solver_type: oneOf(["midpoint", "heun", "logrho", "bh1", "bh2"], "midpoint", { listed: ["midpoint", "heun"] }),
    lower_order_final: bool(lowerOrderFinal),
  };
}

const SPEC: Spec = {
  ...dpmSolverSpec(DPM_ALGORITHMS, true),
  euler_at_final: bool(false),
  ...sigmaKindSpec(),
  use_lu_lambdas: bool(false),
  use_flow_sigmas: bool(false),
  flow_shift: num(1.0, { gt: 0 }),
  final_sigmas_type: oneOf(["zero", "sigma_min"], "zero"),
  lambda_min_clipped: num(-Infinity, { finite: false }),
  variance_type: oneOf(["learned", "learned_range"], null, { nullable: true }),
  ...spacingSpec("linspace"),
  rescale_betas_zero_snr: bool(false),
  use_dynamic_shifting: bool(false),
  time_shift_type: oneOf(["exponential"], "exponential"),
};

/**
 * diffusers' config fix-ups: deprecated names remapped, invalid combinations rejected.
 * @example
 * const c = { algorithm_type: "deis", solver_type: "bh2", solver_order: 2, final_sigmas_type: "zero" };
 * dpmSolverFixup("DPMSolverMultistepScheduler", c); // c.algorithm_type === "dpmsolver++"
 */
export function dpmSolverFixup(className: string, c: Record<string, unknown>, orderMax = 3): void {
  if (c.algorithm_type === "deis") c.algorithm_type = "dpmsolver++";
  if (c.solver_type === "logrho" || c.solver_type === "bh1" || c.solver_type === "bh2") c.solver_type = "midpoint";
  if ((c.solver_order as number) > orderMax) throw invalid(className, "config.solver_order", `an integer in [1, ${orderMax}]`, c.solver_order);
  if (c.algorithm_type !== "dpmsolver++" && c.algorithm_type !== "sde-dpmsolver++" && c.final_sigmas_type === "zero")
    throw invalid(className, "config.final_sigmas_type", `"sigma_min" for algorithm_type ${c.algorithm_type}`, c.final_sigmas_type);
  if (c.algorithm_type === "dpmsolver" || c.algorithm_type === "sde-dpmsolver")
    if (c.prediction_type === "flow_prediction") throw invalid(className, "config.prediction_type", `epsilon, sample or v_prediction for algorithm_type ${c.algorithm_type}`, c.prediction_type);
}


/**
 * DPM-Solver / DPM-Solver++ multistep sampler.
 *
 * @example
 * const s = new DPMSolverMultistepScheduler({ beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012, solver_order: 2 });
 * s.setTimesteps(20);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x).prevSample;
 */
export class DPMSolverMultistepScheduler extends SolverScheduler<DPMSolverMultistepConfig> {
  constructor(config: Partial<DPMSolverMultistepConfig> & Record<string, unknown> = {}) {
    super("DPMSolverMultistepScheduler", SPEC, config, (c) => dpmSolverFixup("DPMSolverMultistepScheduler", c));
    if (this.config.rescale_betas_zero_snr) this.patchZeroSnr();
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    this.applyMu(opts.mu);
    let timesteps: number[];
    if (opts.timesteps) {
      if (c.use_karras_sigmas || c.use_lu_lambdas || c.use_exponential_sigmas || c.use_beta_sigmas)
        throw new Error(`${this.className}: custom timesteps cannot be used with karras/lu/exponential/beta sigmas`);
      timesteps = opts.timesteps.map(Math.trunc);
      numInferenceSteps = timesteps.length;
    } else {
      this.stepsArgument(numInferenceSteps);
      const last = this.clippedLast(c.lambda_min_clipped);
      timesteps = dpmTimesteps(c.timestep_spacing, c.num_train_timesteps, numInferenceSteps, c.steps_offset, last);
    }
    const s = this.solverSchedule(numInferenceSteps, {
      timesteps,
      roundKarras: c.beta_schedule !== "squaredcos_cap_v2",
      luLambdas: c.use_lu_lambdas && !c.use_karras_sigmas,
    });
    this.applySchedule(s, c.final_sigmas_type === "sigma_min" ? this.trainSigmas[0] : 0);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const i = this.initStepIndex(t, true);
    const n = this.timesteps.length;
    // 1. lower-order steps near the end for stability
    const lowerOrderFinal = i === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = i === n - 2 && c.lower_order_final && n < 15;
    const learned = c.variance_type === "learned" || c.variance_type === "learned_range";
    const sde = c.algorithm_type === "sde-dpmsolver" || c.algorithm_type === "sde-dpmsolver++";
    const out = tidy(() => {
      // 2. convert the model output to x₀ (++) or ε and push it to the history
      const converted = c.algorithm_type.endsWith("++")
        ? this.dataPrediction(modelOutput, sample, i, learned)
        : this.noisePrediction(modelOutput, sample, i, learned);
      this.pushModelOutput(converted);
      const x = sample.dtype === "float32" ? sample : sample.float();
      const noise = sde ? this.noiseLike(x, opts) : null;
      // 3. first-, second- or third-order multistep update
      let order = 3;
      if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) order = 1;
      else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) order = 2;
      else if (c.algorithm_type === "sde-dpmsolver")
        throw new Error(`${this.className}: solver_order 3 is not implemented for algorithm_type sde-dpmsolver (as in diffusers)`);
      const points = Array.from({ length: order }, (_, k) => this.lambdasAt(i - k));
      const outputs = Array.from({ length: order }, (_, k) => this.history(k));
      const prev = dpmSolverStep(c, x, this.lambdasAt(i + 1), points, outputs, "multistep", noise);
      return prev.dtype === modelOutput.dtype ? prev : prev.to(modelOutput.dtype);
    });
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this._stepIndex = i + 1;
    return { prevSample: out, predOriginalSample: null };
  }
}
