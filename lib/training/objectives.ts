/**
 * Training objectives: what the denoiser sees (the noisy input and its timestep) and what it
 * must predict, for DDPM-style models (Ho et al. 2020, "Denoising Diffusion Probabilistic
 * Models", Algorithm 1; v-prediction from Salimans & Ho 2022, "Progressive Distillation", §4)
 * and rectified flow (Liu et al. 2022; Esser et al. 2024, "Scaling Rectified Flow
 * Transformers", §2-3). Timestep samplers draw from one seeded Generator.
 */
import { assertNumber, assertOneOf, invalid } from "../errors";
import { sqrt32, f32 } from "../schedulers/f32";
import { noiseSchedule, type NoiseScheduleConfig } from "../schedulers/schedules";
import { normal, rand, randint, tensor, tidy, type Generator, type Tensor } from "../tensor";

export const OBJECTIVES = ["epsilon", "v_prediction", "sample", "flow_matching"] as const;
export type Objective = (typeof OBJECTIVES)[number];

export const TRAIN_BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;
/** The schedules a Trainer takes: those above, and Simple Diffusion's shifted cosine with its resolutions. */
const TRAINER_SCHEDULES = [...TRAIN_BETA_SCHEDULES, "shifted_cosine"] as const;

/** The discrete noise schedule of DDPM-style objectives, named like diffusers' scheduler config. */
export interface TrainNoiseSchedule {
  numTrainTimesteps?: number;
  betaSchedule?: (typeof TRAINER_SCHEDULES)[number];
  betaStart?: number;
  betaEnd?: number;
  /**
   * "shifted_cosine" (Simple Diffusion, see schedulers/schedules.ts): the image side trained at
   * (default 64), the side whose plain cosine schedule is shifted to it (default 64: no shift), and
   * for the interpolated variant the high-resolution end (default null: not interpolated).
   */
  resolution?: number;
  baseResolution?: number;
  baseResolutionHigh?: number | null;
}

/** How training timesteps are drawn. */
export type TimestepSampling = { kind: "uniform" } | { kind: "logit_normal"; mean?: number; std?: number };

/** What one objective step feeds the model and compares its output with. */
export interface NoisedBatch {
  /** x_t. */
  noisy: Tensor;
  /** What the model's output is regressed on. */
  target: Tensor;
  /** The timestep argument of the model call (int64 for DDPM objectives, float32 t·1000 for flow). */
  modelTimesteps: Tensor;
}

/**
 * `alphas_cumprod` for a DDPM-style objective: diffusers' `DDPMScheduler` values (float32).
 * @example alphasCumprodFor({ betaSchedule: "scaled_linear", betaStart: 0.00085, betaEnd: 0.012 }).length; // 1000
 */
export function alphasCumprodFor(schedule: TrainNoiseSchedule = {}): number[] {
  return noiseSchedule(noiseScheduleConfig(schedule)).alphasCumprod;
}

/**
 * A trainer noise schedule as the scheduler-config keys {@link noiseSchedule} reads (checked).
 * @example noiseSchedule(noiseScheduleConfig({ betaSchedule: "shifted_cosine", resolution: 64, baseResolution: 32 })).betas
 */
export function noiseScheduleConfig(schedule: TrainNoiseSchedule = {}): NoiseScheduleConfig {
  const betaSchedule = schedule.betaSchedule ?? "linear";
  assertOneOf(betaSchedule, TRAINER_SCHEDULES, "noiseSchedule.betaSchedule");
  return {
    num_train_timesteps: schedule.numTrainTimesteps ?? 1000,
    beta_start: schedule.betaStart ?? 0.0001,
    beta_end: schedule.betaEnd ?? 0.02,
    beta_schedule: betaSchedule,
    trained_betas: null,
    resolution: schedule.resolution,
    base_resolution: schedule.baseResolution,
    base_resolution_high: schedule.baseResolutionHigh,
  };
}

/** A `[B, 1, 1, ...]` float32 tensor of per-sample values that broadcasts against `like`. */
function perSample(values: number[], like: Tensor): Tensor {
  const t = tensor(Float32Array.from(values), [values.length, ...new Array(like.ndim - 1).fill(1)], { device: like.device });
  return like.dtype === "float32" ? t : t.to(like.dtype);
}

/**
 * DDPM forward process and targets: `x_t = √ᾱ_t·x₀ + √(1-ᾱ_t)·ε`; the target is ε
 * ("epsilon"), `v = √ᾱ_t·ε - √(1-ᾱ_t)·x₀` ("v_prediction") or x₀ ("sample"). Equals diffusers'
 * `add_noise` / `get_velocity` bit for bit.
 * @example const { noisy, target } = ddpmTargets("epsilon", x0, noise, [10, 500], alphasCumprodFor());
 */
export function ddpmTargets(objective: Exclude<Objective, "flow_matching">, x0: Tensor, noise: Tensor, timesteps: number[], alphasCumprod: number[]): NoisedBatch {
  if (timesteps.length !== x0.shape[0]) throw new Error(`ddpmTargets: ${timesteps.length} timesteps for a batch of ${x0.shape[0]}`);
  const ac = timesteps.map((t) => {
    const value = alphasCumprod[t];
    if (!Number.isInteger(t) || value === undefined) throw invalid(`integer timestep in [0, ${alphasCumprod.length})`, "timesteps", t);
    return value;
  });
  return tidy(() => {
    const a = perSample(ac.map(sqrt32), x0); // (B, 1, 1, 1)
    const s = perSample(ac.map((v) => sqrt32(f32(1 - v))), x0); // (B, 1, 1, 1)
    const noisy = a.mul(x0).add(s.mul(noise));
    const target = objective === "epsilon" ? noise.clone() : objective === "sample" ? x0.clone() : a.mul(noise).sub(s.mul(x0));
    const modelTimesteps = tensor(Float64Array.from(timesteps), [timesteps.length], { dtype: "int64", device: x0.device });
    return { noisy, target, modelTimesteps };
  });
}

/**
 * Rectified flow: `x_t = (1 - t)·x₀ + t·ε`, target the velocity `ε - x₀`, t ∈ [0, 1]; the model
 * sees `t · timestepScale` (1000, as diffusers' FlowMatchEulerDiscreteScheduler timesteps).
 * @example const { noisy, target } = flowTargets(x0, noise, tensor([0.2, 0.9]));
 */
export function flowTargets(x0: Tensor, noise: Tensor, t: Tensor, timestepScale = 1000): NoisedBatch {
  if (t.ndim !== 1 || t.shape[0] !== x0.shape[0]) throw new Error(`flowTargets: t must have shape [${x0.shape[0]}] but has [${t.shape}]`);
  return tidy(() => {
    const s = t.to({ dtype: x0.dtype, device: x0.device }).reshape([t.shape[0], ...new Array(x0.ndim - 1).fill(1)]); // (B, 1, 1, 1)
    const noisy = s.neg().add(1).mul(x0).add(s.mul(noise));
    const target = noise.sub(x0);
    const modelTimesteps = t.mul(timestepScale).to({ dtype: "float32", device: x0.device });
    return { noisy, target, modelTimesteps };
  });
}

/**
 * Logit-normal times `sigmoid(u)`, `u ~ N(mean, std)` (Esser et al. 2024, §3.1), drawn like
 * `torch.normal(mean, std, (n,), generator=g)` so the values equal diffusers' sampler.
 * @example logitNormalTimes(4, { generator: new Generator(0) })
 */
export function logitNormalTimes(n: number, options: { mean?: number; std?: number; generator?: Generator } = {}): Tensor {
  const mean = options.mean ?? 0;
  const std = options.std ?? 1;
  return tidy(() => normal(mean, std, [n], { generator: options.generator }).sigmoid());
}

/**
 * Draws one batch of training times: integer timesteps in [0, numTrainTimesteps) for DDPM
 * objectives (uniform, or `floor(u · T)` for logit-normal u), or t ∈ [0, 1] for flow matching.
 * @example sampleTimes("epsilon", 4, { kind: "uniform" }, 1000, g) // { discrete: [..4 ints] }
 */
export function sampleTimes(objective: Objective, n: number, sampling: TimestepSampling, numTrainTimesteps: number, generator: Generator): { discrete?: number[]; continuous?: Tensor } {
  if (objective === "flow_matching") {
    if (sampling.kind === "uniform") return { continuous: rand([n], { generator }) };
    return { continuous: logitNormalTimes(n, { ...sampling, generator }) };
  }
  if (sampling.kind === "uniform") {
    return tidy(() => ({ discrete: Array.from(randint(0, numTrainTimesteps, [n], { generator }).toFloat64Array()) }));
  }
  return tidy(() => {
    const u = logitNormalTimes(n, { ...sampling, generator });
    // u = 1.0 would index one past the schedule; diffusers never hits it at float32 sigmoid's range, we clamp.
    return { discrete: Array.from(u.mul(numTrainTimesteps).long().toFloat64Array(), (i) => Math.min(i, numTrainTimesteps - 1)) };
  });
}

/**
 * The noisy input, regression target and model timesteps of a batch for drawn `times` (from
 * {@link sampleTimes}): flow matching or one of the DDPM parameterisations.
 * @example const { noisy, target, modelTimesteps } = noisedBatch("v_prediction", x0, noise, times, { alphasCumprod });
 */
export function noisedBatch(
  objective: Objective,
  x0: Tensor,
  noise: Tensor,
  times: { discrete?: number[]; continuous?: Tensor },
  schedule: { alphasCumprod: number[]; flowTimestepScale?: number },
): NoisedBatch {
  return objective === "flow_matching"
    ? flowTargets(x0, noise, times.continuous as Tensor, schedule.flowTimestepScale)
    : ddpmTargets(objective, x0, noise, times.discrete as number[], schedule.alphasCumprod);
}

/** Checks a TimestepSampling option. */
export function checkTimestepSampling(value: unknown, name: string): asserts value is TimestepSampling {
  const v = value as TimestepSampling;
  if (typeof v !== "object" || v === null) throw invalid('{ kind: "uniform" } or { kind: "logit_normal", mean, std }', name, value);
  assertOneOf(v.kind, ["uniform", "logit_normal"] as const, `${name}.kind`);
  if (v.kind === "logit_normal") {
    if (v.mean !== undefined) assertNumber(v.mean, `${name}.mean`);
    if (v.std !== undefined) {
      assertNumber(v.std, `${name}.std`);
      if (v.std <= 0) throw invalid("positive number", `${name}.std`, v.std);
    }
  }
}
