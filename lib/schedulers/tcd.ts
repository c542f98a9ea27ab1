/**
 * TCD: Zheng, Yang, Wang, Lin & Qi (2024), "Trajectory Consistency Distillation",
 * https://arxiv.org/abs/2402.19159 — strategic stochastic sampling (§4.2): predict x₀ and ε,
 * jump to the intermediate timestep s = ⌊(1-γ)·t_prev⌋ along the trajectory, then re-noise
 * from s to t_prev with strength γ (`eta`). Mirrors diffusers' `TCDScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, ddpmX0Eps, timestepValue } from "./base";
import { invalid } from "./config";
import { div32, f32, mul32, sqrt32 } from "./f32";
import { ConsistencyScheduler, LCMConfig, distillationTimesteps } from "./lcm";

export type TCDConfig = LCMConfig;

/** TCD step result: adds the predicted sample at the intermediate timestep s. */
export interface TCDStepOutput extends StepOutput {
  predNoisedSample: Tensor;
}

/**
 * TCD sampler; `eta` (γ, default 0.3) controls the stochasticity.
 *
 * @example
 * const s = new TCDScheduler({});
 * s.setTimesteps(4);
 * for (const t of s.timesteps) x = s.step(unet(x, t), t, x, { eta: 0.3, generator }).prevSample;
 */
export class TCDScheduler extends ConsistencyScheduler {
  constructor(config: Partial<TCDConfig> & Record<string, unknown> = {}) {
    super("TCDScheduler", config);
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const strength = opts.strength ?? 1;
    const original = opts.originalInferenceSteps ?? c.original_inference_steps;
    // 1. the TCD distillation schedule (or every timestep when originalInferenceSteps is given)
    let origin: number[];
    if (opts.originalInferenceSteps === undefined) {
      if (original > T) throw invalid(this.className, "config.original_inference_steps", `<= num_train_timesteps (${T})`, original);
      origin = distillationTimesteps(T, original, strength);
    } else origin = Array.from({ length: Math.floor(T * strength) }, (_, i) => i);
    // 2. the inference schedule
    this.applyInferenceSchedule(origin, original, strength, numInferenceSteps, opts.timesteps);
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): TCDStepOutput {
    this.requireTimesteps();
    const c = this.config;
    const eta = opts.eta ?? 0.3;
    if (typeof eta !== "number" || !(eta >= 0 && eta <= 1)) throw invalid(this.className, "step: eta", "a number in [0, 1]", eta);
    const i = this.initStepIndex(t);
    const tt = this.trainIndex(timestepValue(t));
    // 1. previous step value and the intermediate timestep s = ⌊(1 - γ)·t_prev⌋
    const prevT = i + 1 < this.timesteps.length ? this.timesteps[i + 1] : 0;
    const s = Math.floor(mul32(f32(1 - eta), prevT));
    // 2. alphas, betas
    const a = this.alphasCumprod[tt];
    const ap = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const as = this.alphasCumprod[s];
    const bs = f32(1 - as);
    const out = tidy(() => {
      // 3. predicted x₀ and ε, then the noised sample at s
      const [x0, eps] = ddpmX0Eps(c.prediction_type, modelOutput, sample, a);
      const noised = x0.mul(sqrt32(as)).add(eps.mul(sqrt32(bs)));
      // 4. re-noise from s to t_prev with strength γ (not after the last step)
      let prev: Tensor;
      if (eta > 0 && i !== this.numInferenceSteps! - 1) {
        const ratio = div32(ap, as);
        prev = noised.mul(sqrt32(ratio)).add(this.noiseLike(modelOutput, opts).mul(sqrt32(f32(1 - ratio))));
      } else prev = noised.clone();
      return { prevSample: prev, predOriginalSample: x0, predNoisedSample: noised };
    });
    this._stepIndex = i + 1;
    return out;
  }
}
