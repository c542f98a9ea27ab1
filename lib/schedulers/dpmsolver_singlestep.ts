/**
 * Singlestep DPM-Solver: Lu et al. (2022), "DPM-Solver", https://arxiv.org/abs/2206.00927
 * (Algorithms 1–2, DPM-Solver-2/3 with intermediate points taken from the schedule) and
 * "DPM-Solver++", https://arxiv.org/abs/2211.01095 (Algorithm 1), mirroring diffusers'
 * `DPMSolverSinglestepScheduler`: timesteps are grouped into blocks of order 1, 2 or 3, each
 * block restarting from the sample at its first timestep. The update formulas are in
 * dpmsolver_update.ts, shared with the multistep sampler.
 */
import { Tensor, keep, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike } from "./base";
import { Spec, bool, num, oneOf } from "./config";
import { SolverConfig, SolverScheduler } from "./solver_base";
import { npRound, numpyLinspace } from "./numpy";
import { dpmSolverFixup, dpmSolverSpec } from "./dpmsolver_multistep";
import { dpmSolverStep } from "./dpmsolver_update";
import { sigmaKindSpec } from "./specs";

export interface DPMSolverSinglestepConfig extends SolverConfig {
  algorithm_type: "dpmsolver" | "dpmsolver++" | "sde-dpmsolver++";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  final_sigmas_type: "zero" | "sigma_min";
  lambda_min_clipped: number;
  variance_type: "learned" | "learned_range" | null;
}

const SPEC: Spec = {
  ...dpmSolverSpec(["dpmsolver", "dpmsolver++", "sde-dpmsolver++"], false),
  ...sigmaKindSpec(),
  use_flow_sigmas: bool(false),
  flow_shift: num(1.0, { gt: 0 }),
  final_sigmas_type: oneOf(["zero", "sigma_min"], "zero"),
  lambda_min_clipped: num(-Infinity, { finite: false }),
  variance_type: oneOf(["learned", "learned_range"], null, { nullable: true }),
  use_dynamic_shifting: bool(false),
  time_shift_type: oneOf(["exponential"], "exponential"),
};

/**
 * Solver order at each step (diffusers' `get_order_list`): repeating [1, 2, 3] blocks, ending
 * on lower orders when `lowerOrderFinal`, and a final first-order step for a zero final sigma.
 *
 * @example
 * singlestepOrders(9, 3, true, true); // [1, 2, 3, 1, 2, 3, 1, 2, 1]
 */
export function singlestepOrders(steps: number, order: number, lowerOrderFinal: boolean, zeroFinal: boolean): number[] {
  const rep = (block: number[], k: number) => Array.from({ length: k }, () => block).flat();
  let orders: number[];
  if (lowerOrderFinal) {
    if (order === 3) {
      if (steps % 3 === 0) orders = [...rep([1, 2, 3], steps / 3 - 1), 1, 2, 1];
      else if (steps % 3 === 1) orders = [...rep([1, 2, 3], Math.floor(steps / 3)), 1];
      else orders = [...rep([1, 2, 3], Math.floor(steps / 3)), 1, 2];
    } else if (order === 2) {
      orders = steps % 2 === 0 ? [...rep([1, 2], steps / 2 - 1), 1, 1] : [...rep([1, 2], Math.floor(steps / 2)), 1];
    } else orders = new Array(steps).fill(1);
  } else {
    orders = order === 3 ? rep([1, 2, 3], Math.floor(steps / 3)) : order === 2 ? rep([1, 2], Math.floor(steps / 2)) : new Array(steps).fill(1);
  }
  if (zeroFinal && orders.length > 0) orders[orders.length - 1] = 1;
  return orders;
}

/**
 * Singlestep DPM-Solver(++) sampler.
 *
 * @example
 * const s = new DPMSolverSinglestepScheduler({ solver_order: 3 });
 * s.setTimesteps(12);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x).prevSample;
 */
export class DPMSolverSinglestepScheduler extends SolverScheduler<DPMSolverSinglestepConfig> {
  /** Solver order of each step. */
  orderList: number[];
  /** `lower_order_final` in effect (diffusers turns it on for uneven step counts / zero final sigma). */
  lowerOrderFinal: boolean;
  private blockSample: Tensor | null = null;

  constructor(config: Partial<DPMSolverSinglestepConfig> & Record<string, unknown> = {}) {
    super("DPMSolverSinglestepScheduler", SPEC, config, (c) => dpmSolverFixup("DPMSolverSinglestepScheduler", c));
    this.lowerOrderFinal = this.config.lower_order_final;
    this.orderList = singlestepOrders(this.config.num_train_timesteps, this.config.solver_order, this.lowerOrderFinal, this.config.final_sigmas_type === "zero");
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    this.applyMu(opts.mu);
    let timesteps: number[];
    if (opts.timesteps) {
      timesteps = opts.timesteps.map(Math.trunc);
      numInferenceSteps = timesteps.length;
    } else {
      this.stepsArgument(numInferenceSteps);
      const clipped = c.num_train_timesteps - this.clippedLast(c.lambda_min_clipped);
      timesteps = npRound(numpyLinspace(0, c.num_train_timesteps - 1 - clipped, numInferenceSteps + 1)).reverse().slice(0, numInferenceSteps);
    }
    const s = this.solverSchedule(numInferenceSteps, { timesteps, roundKarras: true });
    this.applySchedule(s, c.final_sigmas_type === "sigma_min" ? this.trainSigmas[0] : 0);
    if (!this.lowerOrderFinal && (numInferenceSteps % c.solver_order !== 0 || c.final_sigmas_type === "zero")) this.lowerOrderFinal = true;
    this.orderList = singlestepOrders(numInferenceSteps, c.solver_order, this.lowerOrderFinal, c.final_sigmas_type === "zero");
  }

  protected resetState(): void {
    super.resetState();
    this.blockSample?.dispose();
    this.blockSample = null;
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    this.requireTimesteps();
    const c = this.config;
    const i = this.initStepIndex(t, true);
    const learned = c.variance_type === "learned" || c.variance_type === "learned_range";
    const out = tidy(() => {
      // 1. convert the model output and push it to the history
      const converted = c.algorithm_type === "dpmsolver"
        ? this.noisePrediction(modelOutput, sample, i, learned)
        : this.dataPrediction(modelOutput, sample, i, learned);
      this.pushModelOutput(converted);
      const noise = c.algorithm_type === "sde-dpmsolver++" ? this.noiseLike(modelOutput, opts) : null;
      // 2. order of this step; a block starting midway (img2img) lowers it
      let order = this.orderList[i];
      while (this.modelOutputs[this.modelOutputs.length - order] === null) order -= 1;
      // 3. a block restarts from the sample at its first step
      if (order === 1) {
        this.blockSample?.dispose();
        this.blockSample = keep(sample.clone());
      }
      // 4. DPM-Solver-`order` from the block's start through this step's point to the next
      const points = Array.from({ length: order }, (_, k) => this.lambdasAt(i - k));
      const outputs = Array.from({ length: order }, (_, k) => this.history(k));
      return dpmSolverStep(c, this.blockSample!, this.lambdasAt(i + 1), points, outputs, "singlestep", noise);
    });
    this._stepIndex = i + 1;
    return { prevSample: out, predOriginalSample: null };
  }
}
