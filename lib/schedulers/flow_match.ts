/**
 * Flow matching Euler sampler: Lipman et al. (2023), "Flow Matching for Generative Modeling",
 * https://arxiv.org/abs/2210.02747, with rectified-flow interpolation x_σ = (1-σ)·x₀ + σ·ε and
 * the timestep shifts of Esser et al. (2024), "Scaling Rectified Flow Transformers" (SD3, §5.3.2)
 * and Flux's resolution-dependent μ. Euler on dx/dσ = v: x_{σ'} = x_σ + (σ' - σ)·v.
 * Mirrors diffusers' `FlowMatchEulerDiscreteScheduler`.
 */
import { Tensor, tidy } from "../tensor";
import { SchedulerBase, SetTimestepsOptions, StepOptions, StepOutput, TimestepLike, TimestepsLike, perSample, timestepList } from "./base";
import { Spec, bool, int, invalid, num, oneOf } from "./config";
import { add32, div32, f32, mul32, sub32 } from "./f32";
import { numpyLinspace } from "./numpy";
import { betaSigmas, exponentialSigmas, karrasSigmas, stretchShiftToTerminal, timeShift } from "./sigmas";
import { checkOneSigmaKind, sigmaKind, sigmaKindSpec } from "./specs";

export interface FlowMatchEulerConfig {
  num_train_timesteps: number;
  shift: number;
  use_dynamic_shifting: boolean;
  base_shift: number;
  max_shift: number;
  base_image_seq_len: number;
  max_image_seq_len: number;
  invert_sigmas: boolean;
  shift_terminal: number | null;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: boolean;
  use_beta_sigmas: boolean;
  time_shift_type: "exponential" | "linear";
  stochastic_sampling: boolean;
}

const SPEC: Spec = {
  num_train_timesteps: int(1000, { min: 1 }),
  shift: num(1.0, { gt: 0 }),
  use_dynamic_shifting: bool(false),
  base_shift: num(0.5),
  max_shift: num(1.15),
  base_image_seq_len: int(256, { min: 1 }),
  max_image_seq_len: int(4096, { min: 1 }),
  invert_sigmas: bool(false),
  shift_terminal: num(null, { gt: 0, max: 1, nullable: true }),
  ...sigmaKindSpec(),
  time_shift_type: oneOf(["exponential", "linear"], "exponential"),
  stochastic_sampling: bool(false),
};

/**
 * Flux's μ for an image of `imageSeqLen` latent tokens: linear in the sequence length between
 * (`base_image_seq_len`, `base_shift`) and (`max_image_seq_len`, `max_shift`).
 *
 * @example
 * calculateShift(4096, { base_image_seq_len: 256, max_image_seq_len: 4096, base_shift: 0.5, max_shift: 1.15 }); // 1.15
 */
export function calculateShift(
  imageSeqLen: number,
  c: Pick<FlowMatchEulerConfig, "base_image_seq_len" | "max_image_seq_len" | "base_shift" | "max_shift">,
): number {
  const m = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len);
  const b = c.base_shift - m * c.base_image_seq_len;
  return imageSeqLen * m + b;
}

/**
 * Flow-matching Euler sampler for rectified-flow models (SD3, Flux, ...): the model predicts the
 * velocity v = ε - x₀.
 *
 * @example
 * const s = new FlowMatchEulerDiscreteScheduler({ shift: 3.0 });
 * s.setTimesteps(28);
 * for (const t of s.timesteps) x = s.step(transformer(x, t), t, x).prevSample;
 */
export class FlowMatchEulerDiscreteScheduler extends SchedulerBase<FlowMatchEulerConfig> {
  /** The current static shift (`set_shift` in diffusers). */
  shift: number;
  readonly sigmaMin: number;
  readonly sigmaMax: number;

  constructor(config: Partial<FlowMatchEulerConfig> & Record<string, unknown> = {}) {
    super("FlowMatchEulerDiscreteScheduler", SPEC, config);
    const c = this.config;
    checkOneSigmaKind(this.className, c as unknown as Record<string, unknown>);
    const T = c.num_train_timesteps;
    this.shift = c.shift;
    // σ_i = i/T for i = T..1, shifted unless the shift is applied per resolution later (float32)
    let sigmas = numpyLinspace(1, T, T).map(f32).reverse().map((t) => div32(t, T));
    if (!c.use_dynamic_shifting) {
      const s = f32(c.shift);
      const sm1 = f32(c.shift - 1);
      sigmas = sigmas.map((x) => div32(mul32(s, x), add32(1, mul32(sm1, x))));
    }
    this.sigmas = sigmas;
    this.timesteps = sigmas.map((x) => mul32(x, T));
    this.sigmaMin = sigmas[sigmas.length - 1];
    this.sigmaMax = sigmas[0];
  }

  /** Sets the static shift used by later `setTimesteps` calls (diffusers' `set_shift`). */
  setShift(shift: number): void {
    if (!(typeof shift === "number" && shift > 0)) throw invalid(this.className, "setShift: shift", "a number > 0", shift);
    this.shift = shift;
  }

  setTimesteps(numInferenceSteps: number, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    if (c.use_dynamic_shifting && opts.mu === undefined)
      throw new Error(`${this.className}: setTimesteps needs opts.mu when config.use_dynamic_shifting is true`);
    if (opts.sigmas && opts.timesteps && opts.sigmas.length !== opts.timesteps.length)
      throw invalid(this.className, "setTimesteps: sigmas", `the same length as timesteps (${opts.timesteps.length})`, opts.sigmas.length);
    const custom = opts.sigmas ?? opts.timesteps;
    const n = custom ? custom.length : this.stepsArgument(numInferenceSteps);
    this.numInferenceSteps = n;
    // 1. default sigmas: evenly spaced timesteps between σ_max and σ_min
    const timestepsGiven = opts.timesteps ? opts.timesteps.map(f32) : null;
    let sigmas: number[];
    if (opts.sigmas) sigmas = opts.sigmas.map(f32);
    else if (timestepsGiven) sigmas = timestepsGiven.map((t) => f32(t / T));
    else sigmas = numpyLinspace(this.sigmaMax * T, this.sigmaMin * T, n).map((t) => t / T);
    // 2. timestep shifting: resolution-dependent (μ) or static
    if (c.use_dynamic_shifting) sigmas = sigmas.map((s) => timeShift(c.time_shift_type, opts.mu!, 1, s));
    else sigmas = sigmas.map((s) => (this.shift * s) / (1 + (this.shift - 1) * s));
    // 3. stretch to the configured terminal value
    if (c.shift_terminal) sigmas = stretchShiftToTerminal(sigmas, c.shift_terminal);
    // 4. optional Karras / exponential / beta re-spacing
    const kind = sigmaKind(c);
    if (kind) {
      const lo = sigmas[sigmas.length - 1];
      const hi = sigmas[0];
      sigmas = kind === "karras" ? karrasSigmas(lo, hi, n) : kind === "exponential" ? exponentialSigmas(lo, hi, n) : betaSigmas(lo, hi, n);
    }
    // 5. float32 sigmas and timesteps, final sigma appended
    let s32 = sigmas.map(f32);
    let ts = timestepsGiven ?? s32.map((s) => mul32(s, T));
    if (c.invert_sigmas) {
      s32 = s32.map((s) => sub32(1, s));
      ts = s32.map((s) => mul32(s, T));
      s32.push(1);
    } else s32.push(0);
    this.sigmas = s32;
    this.timesteps = ts;
    this._stepIndex = null;
    this._beginIndex = null;
  }

  step(modelOutput: Tensor, t: TimestepLike, sample: Tensor, opts: StepOptions = {}): StepOutput {
    const i = this.initStepIndex(t);
    const sigma = this.sigmas![i];
    const sigmaNext = this.sigmas![i + 1];
    const out = tidy(() => {
      const x = sample.dtype === "float32" ? sample : sample.float();
      let prev: Tensor;
      if (this.config.stochastic_sampling) {
        // x₀ = x - σ·v, then re-noise to σ_next with a fresh draw
        const x0 = x.sub(modelOutput.mul(sigma));
        prev = x0.mul(f32(1 - sigmaNext)).add(this.noiseLike(x, opts).mul(sigmaNext));
      } else {
        // Euler step x_{σ'} = x_σ + (σ' - σ)·v
        prev = x.add(modelOutput.mul(sub32(sigmaNext, sigma)));
      }
      return prev.dtype === modelOutput.dtype ? prev : prev.to(modelOutput.dtype);
    });
    this._stepIndex = i + 1;
    return { prevSample: out, predOriginalSample: null };
  }

  /** Forward process: `σ·noise + (1 - σ)·sample` at the sigma of each timestep. */
  scaleNoise(sample: Tensor, timestep: TimestepsLike, noise: Tensor): Tensor {
    const sig = this.noiseIndices(timestepList(timestep)).map((i) => this.sigmas![i]);
    return tidy(() => {
      const s = perSample(sig, sample);
      return s.mul(noise).add(s.neg().add(1).mul(sample));
    });
  }

  /** Same as {@link scaleNoise} (the flow-matching forward process), for a uniform API. */
  addNoise(original: Tensor, noise: Tensor, timesteps: TimestepsLike): Tensor {
    return this.scaleNoise(original, timesteps, noise);
  }
}
