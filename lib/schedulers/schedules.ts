/**
 * Noise schedules of discrete-time diffusion models: betas, alphas and `alphas_cumprod`,
 * computed with diffusers' precision (float32 torch tensors, float64 where diffusers builds the
 * values in Python) so the schedules match diffusers bit for bit.
 */
import { f32, sqrt32 } from "./f32";
import { cumprod32, torchLinspace32 } from "./numpy";

/** Beta schedules: diffusers' four, plus Simple Diffusion's shifted cosine (`"shifted_cosine"`). */
export const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "shifted_cosine"] as const;
export type BetaSchedule = (typeof BETA_SCHEDULES)[number];

/** Parameters of the shifted cosine schedule (see {@link shiftedCosineLogSnr}). */
export interface ShiftedCosineOptions {
  /** Image side length `d` the model is trained/sampled at. */
  resolution: number;
  /** Reference side length the plain cosine schedule suits (64 in the paper). */
  baseResolution: number;
  /** When set, interpolate between the shift of `baseResolution` (high noise) and this one (low noise). */
  baseResolutionHigh: number | null;
  logsnrMin: number;
  logsnrMax: number;
}

/**
 * Betas discretising `alpha_bar(t) = cos²((t + 0.008) / 1.008 · π/2)` (Nichol & Dhariwal 2021),
 * `min(1 - alpha_bar((i+1)/n) / alpha_bar(i/n), max_beta)` in float64, stored as float32.
 *
 * @example
 * betasForAlphaBar(1000)[0]; // 0.00004139... (float32)
 */
export function betasForAlphaBar(n: number, maxBeta = 0.999): number[] {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = f32(Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta));
  return out;
}

/** `torch.linspace(beta_start, beta_end, n)` in float32. @example linearBetas(0.0001, 0.02, 1000) */
export const linearBetas = (start: number, end: number, n: number): number[] => torchLinspace32(start, end, n);

/** `torch.linspace(start**0.5, end**0.5, n) ** 2` in float32 (Stable Diffusion). @example scaledLinearBetas(0.00085, 0.012, 1000) */
export const scaledLinearBetas = (start: number, end: number, n: number): number[] =>
  torchLinspace32(Math.sqrt(start), Math.sqrt(end), n).map((b) => f32(b * b));

/** `sigmoid(linspace(-6, 6, n)) * (end - start) + start` in float32 (GeoDiff). @example sigmoidBetas(0.0001, 0.02, 1000) */
export function sigmoidBetas(start: number, end: number, n: number): number[] {
  const range = f32(end - start);
  return torchLinspace32(-6, 6, n).map((x) => f32(f32(f32(1 / f32(1 + f32(Math.exp(-x)))) * range) + f32(start)));
}

/**
 * Cosine logSNR truncated to [logsnr_min, logsnr_max] (Hoogeboom et al. 2023, "simple diffusion",
 * Algorithm 1): `λ(t) = -2 log tan(t_min + t (t_max - t_min))`, `t_min = atan(exp(-λ_max/2))`,
 * `t_max = atan(exp(-λ_min/2))`, plus the resolution shift `2 log(base / resolution)`:
 *
 * - shifted:      `λ_s(t; b) = λ(t) + 2 log(b / resolution)`
 * - interpolated: `λ(t) = t · λ_s(t; baseResolution) + (1 - t) · λ_s(t; baseResolutionHigh)`
 *
 * @example
 * shiftedCosineLogSnr(0.5, { resolution: 512, baseResolution: 64, baseResolutionHigh: null, logsnrMin: -15, logsnrMax: 15 }); // -2·log 8
 */
export function shiftedCosineLogSnr(t: number, o: ShiftedCosineOptions): number {
  const tMin = Math.atan(Math.exp(-0.5 * o.logsnrMax));
  const tMax = Math.atan(Math.exp(-0.5 * o.logsnrMin));
  const cosine = -2 * Math.log(Math.tan(tMin + t * (tMax - tMin)));
  const shifted = (base: number) => cosine + 2 * Math.log(base / o.resolution);
  if (o.baseResolutionHigh == null) return shifted(o.baseResolution);
  return t * shifted(o.baseResolution) + (1 - t) * shifted(o.baseResolutionHigh);
}

/**
 * `alphas_cumprod[i] = sigmoid(λ((i + 1) / n))` for the shifted cosine schedule (float64, stored
 * as float32): discrete timestep `n - 1` is continuous time 1, the noisiest.
 *
 * @example
 * shiftedCosineAlphasCumprod(1000, { resolution: 256, baseResolution: 64, baseResolutionHigh: null, logsnrMin: -15, logsnrMax: 15 });
 */
export function shiftedCosineAlphasCumprod(n: number, o: ShiftedCosineOptions): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = 1 / (1 + Math.exp(-shiftedCosineLogSnr((i + 1) / n, o)));
  return out;
}

/**
 * Rescale betas to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and
 * Sample Steps are Flawed", Algorithm 1), in float32 like diffusers.
 *
 * @example
 * const betas = rescaleZeroTerminalSnr(scaledLinearBetas(0.00085, 0.012, 1000)); // betas[999] === 1
 */
export function rescaleZeroTerminalSnr(betas: number[]): number[] {
  const n = betas.length;
  const cum = cumprod32(betas.map((b) => f32(1 - b)));
  const sq = cum.map(sqrt32);
  const s0 = sq[0];
  const sT = sq[n - 1];
  const scale = f32(s0 / f32(s0 - sT));
  const bar = sq.map((s) => {
    const v = f32(f32(s - sT) * scale);
    return f32(v * v);
  });
  const out = new Array<number>(n);
  out[0] = f32(1 - bar[0]);
  for (let i = 1; i < n; i++) out[i] = f32(1 - f32(bar[i] / bar[i - 1]));
  return out;
}

/** Inputs of {@link noiseSchedule}, named like diffusers' config keys. */
export interface NoiseScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  trained_betas: number[] | null;
  rescale_betas_zero_snr?: boolean;
  resolution?: number;
  base_resolution?: number;
  base_resolution_high?: number | null;
  logsnr_min?: number;
  logsnr_max?: number;
}

/** A discrete noise schedule: float32 values as JS numbers. */
export interface NoiseSchedule {
  betas: number[];
  alphas: number[];
  alphasCumprod: number[];
}

/**
 * Betas, alphas and `alphas_cumprod` for a scheduler config, as diffusers' `__init__` builds them
 * (`trained_betas` first, then `beta_schedule`, then `rescale_betas_zero_snr`).
 *
 * @example
 * noiseSchedule({ num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear", trained_betas: null }).alphasCumprod[999]; // 0.0046...
 */
export function noiseSchedule(c: NoiseScheduleConfig): NoiseSchedule {
  const n = c.num_train_timesteps;
  let betas: number[];
  let alphasCumprod: number[] | null = null;
  if (c.trained_betas != null) betas = c.trained_betas.map(f32);
  else if (c.beta_schedule === "linear") betas = linearBetas(c.beta_start, c.beta_end, n);
  else if (c.beta_schedule === "scaled_linear") betas = scaledLinearBetas(c.beta_start, c.beta_end, n);
  else if (c.beta_schedule === "squaredcos_cap_v2") betas = betasForAlphaBar(n);
  else if (c.beta_schedule === "sigmoid") betas = sigmoidBetas(c.beta_start, c.beta_end, n);
  else if (c.beta_schedule === "shifted_cosine") {
    const bar = shiftedCosineAlphasCumprod(n, {
      resolution: c.resolution ?? 64,
      baseResolution: c.base_resolution ?? 64,
      baseResolutionHigh: c.base_resolution_high ?? null,
      logsnrMin: c.logsnr_min ?? -15,
      logsnrMax: c.logsnr_max ?? 15,
    });
    betas = bar.map((a, i) => f32(1 - a / (i === 0 ? 1 : bar[i - 1])));
    alphasCumprod = bar.map(f32);
  } else throw new Error(`noiseSchedule: unknown beta_schedule ${JSON.stringify(c.beta_schedule)}`);
  if (c.rescale_betas_zero_snr) {
    betas = rescaleZeroTerminalSnr(betas);
    alphasCumprod = null;
  }
  const alphas = betas.map((b) => f32(1 - b));
  return { betas, alphas, alphasCumprod: alphasCumprod ?? cumprod32(alphas) };
}

/**
 * `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32: the training sigmas of the
 * variance-exploding view, increasing with the timestep.
 *
 * @example
 * trainSigmas([0.99915]); // [0.029167...]
 */
export const trainSigmas = (alphasCumprod: number[]): number[] =>
  alphasCumprod.map((a) => sqrt32(f32(f32(1 - a) / a)));
