/**
 * Sigma schedules and timestep spacings shared by the schedulers: Karras, exponential and beta
 * sigmas, sigma→timestep interpolation, flow-matching shifts and diffusers' three
 * `timestep_spacing` modes. Pure functions over float64 numbers (float32 where stated).
 */
import { f32, log32, roundHalfEven, sub32, div32, mul32, add32 } from "./f32";
import { npRound, numpyArange, numpyLinspace } from "./numpy";

/**
 * Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models",
 * eq. (5): `(σ_max^(1/ρ) + i/(n-1) · (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ`, float64.
 *
 * @example
 * karrasSigmas(0.0292, 14.6146, 4); // [14.6146, 3.45..., 0.47..., 0.0292]
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): number[] {
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return numpyLinspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * Sigmas evenly spaced in log space from `sigmaMax` down to `sigmaMin`, float64.
 *
 * @example
 * exponentialSigmas(0.1, 10, 3); // [10, 1, 0.1]
 */
export function exponentialSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  return numpyLinspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp);
}

/**
 * Lee et al. (2024), "Beta Sampling is All You Need": `σ_min + ppf(1 - i/(n-1); α, β) · (σ_max - σ_min)`
 * with the Beta(α, β) quantile function (scipy's `beta.ppf` in diffusers), float64.
 *
 * @example
 * betaSigmas(0.0292, 14.6146, 5); // starts at σ_max, ends at σ_min
 */
export function betaSigmas(sigmaMin: number, sigmaMax: number, n: number, alpha = 0.6, beta = 0.6): number[] {
  return numpyLinspace(0, 1, n).map((r) => sigmaMin + betaPpf(1 - r, alpha, beta) * (sigmaMax - sigmaMin));
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative). */
function lgamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lgamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 1000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-16) break;
  }
  return h;
}

/**
 * Regularised incomplete beta function I_x(a, b).
 *
 * @example
 * betaCdf(0.5, 0.6, 0.6); // 0.5
 */
export function betaCdf(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const lnFront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * Math.log(x) + b * Math.log1p(-x);
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lnFront) * betaContinuedFraction(x, a, b)) / a;
  return 1 - (Math.exp(lnFront) * betaContinuedFraction(1 - x, b, a)) / b;
}

/**
 * Quantile function of Beta(a, b): the x with I_x(a, b) = p, by bisection to full precision.
 *
 * @example
 * betaPpf(0.5, 0.6, 0.6); // 0.5
 */
export function betaPpf(p: number, a: number, b: number): number {
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 200; i++) {
    const mid = 0.5 * (lo + hi);
    if (mid === lo || mid === hi) break;
    if (betaCdf(mid, a, b) < p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

/**
 * diffusers' `_sigma_to_t`: the fractional timestep whose sigma is `sigma`, by linear
 * interpolation of log-sigma between the neighbouring training timesteps. `logSigmas` are the
 * float32 logs of the increasing training sigmas; arithmetic is float64 (numpy 2 promotion).
 *
 * @example
 * sigmaToT(1.0, [-2, -1, 0, 1]); // 2
 */
export function sigmaToT(sigma: number, logSigmas: number[]): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let count = 0;
  for (let j = 0; j < logSigmas.length; j++) if (logSigma >= logSigmas[j]) count = j + 1;
  const lowIdx = Math.min(Math.max(count - 1, 0), logSigmas.length - 2);
  const low = logSigmas[lowIdx];
  const high = logSigmas[lowIdx + 1];
  const w = Math.min(Math.max((low - logSigma) / f32(low - high), 0), 1);
  return (1 - w) * lowIdx + w * (lowIdx + 1);
}

/**
 * `_sigma_to_t` when diffusers feeds it float32 torch tensors (KDPM2's interpolated sigmas):
 * every operation rounds to float32.
 *
 * @example
 * sigmaToT32(Math.fround(1.0), [-2, -1, 0, 1].map(Math.fround)); // 2
 */
export function sigmaToT32(sigma: number, logSigmas: number[]): number {
  const logSigma = log32(Math.max(sigma, f32(1e-10)));
  let count = 0;
  for (let j = 0; j < logSigmas.length; j++) if (sub32(logSigma, logSigmas[j]) >= 0) count = j + 1;
  const lowIdx = Math.min(Math.max(count - 1, 0), logSigmas.length - 2);
  const low = logSigmas[lowIdx];
  const high = logSigmas[lowIdx + 1];
  const w = Math.min(Math.max(div32(sub32(low, logSigma), sub32(low, high)), 0), 1);
  return add32(mul32(sub32(1, w), lowIdx), mul32(w, lowIdx + 1));
}

/** Timestep spacings of Lin et al. (2023), Table 2: "leading", "trailing", "linspace". */
export const TIMESTEP_SPACINGS = ["leading", "trailing", "linspace"] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

/**
 * Descending integer timesteps as DDPM/DDIM/PNDM build them (`n` values):
 * leading `round(arange(n) · (T // n)) + offset`, trailing `round(arange(T, 0, -T/n)) - 1`,
 * linspace `round(linspace(0, T-1, n))`.
 *
 * @example
 * ddimTimesteps("leading", 1000, 10, 1); // [901, 801, ..., 1]
 */
export function ddimTimesteps(spacing: TimestepSpacing, T: number, n: number, offset: number): number[] {
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    return npRound(numpyArange(0, n, 1).map((i) => i * ratio)).reverse().map((t) => t + offset);
  }
  if (spacing === "trailing") return npRound(numpyArange(T, 0, -T / n)).map((t) => t - 1);
  return npRound(numpyLinspace(0, T - 1, n)).reverse();
}

/**
 * Descending integer timesteps as the DPM-Solver family builds them (`n` of `n + 1` points):
 * linspace `round(linspace(0, last-1, n+1))[::-1][:-1]`, leading with ratio `last // (n+1)`,
 * trailing `round(arange(last, 0, -T/n)) - 1`.
 *
 * @example
 * dpmTimesteps("linspace", 1000, 20, 0); // [999, 949, ..., 50]
 */
export function dpmTimesteps(spacing: TimestepSpacing, T: number, n: number, offset: number, last = T): number[] {
  if (spacing === "linspace") return npRound(numpyLinspace(0, last - 1, n + 1)).reverse().slice(0, n);
  if (spacing === "leading") {
    const ratio = Math.floor(last / (n + 1));
    return npRound(numpyArange(0, n + 1, 1).map((i) => i * ratio)).reverse().slice(0, n).map((t) => t + offset);
  }
  return npRound(numpyArange(last, 0, -T / n)).map((t) => t - 1);
}

/**
 * Descending float32 timesteps as Euler/Heun/LMS/KDPM2 build them: linspace is
 * `linspace(0, T-1, n, dtype=float32)`, leading/trailing as in {@link ddimTimesteps}.
 *
 * @example
 * eulerTimesteps("linspace", 1000, 10, 0); // [999, 888, ..., 0]
 */
export function eulerTimesteps(spacing: TimestepSpacing, T: number, n: number, offset: number): number[] {
  if (spacing === "linspace") return numpyLinspace(0, T - 1, n).map(f32).reverse();
  return ddimTimesteps(spacing, T, n, offset).map(f32);
}

/**
 * Flow-matching shift `s·σ / (1 + (s-1)·σ)` (Esser et al. 2024, SD3 §5.3.2).
 *
 * @example
 * flowShift(0.5, 3); // 0.75
 */
export const flowShift = (sigma: number, shift: number): number => (shift * sigma) / (1 + (shift - 1) * sigma);

/**
 * Resolution-dependent time shift: exponential `e^μ / (e^μ + (1/t - 1)^σ)`, linear `μ / (μ + (1/t - 1)^σ)`.
 *
 * @example
 * timeShift("exponential", Math.log(3), 1, 0.5); // 0.75
 */
export function timeShift(kind: "exponential" | "linear", mu: number, sigma: number, t: number): number {
  if (kind === "exponential") return Math.exp(mu) / (Math.exp(mu) + (1 / t - 1) ** sigma);
  return mu / (mu + (1 / t - 1) ** sigma);
}

/**
 * LTX-Video's stretch so the last sigma equals `terminal`: `1 - (1 - t) / ((1 - t_last) / (1 - terminal))`.
 *
 * @example
 * stretchShiftToTerminal([1, 0.5, 0.2], 0.1); // [1, 0.4375, 0.1]
 */
export function stretchShiftToTerminal(t: number[], terminal: number): number[] {
  const scale = (1 - t[t.length - 1]) / (1 - terminal);
  return t.map((v) => 1 - (1 - v) / scale);
}

/** Rounds half to even like `numpy.round`. @example roundTimesteps([0.5, 1.5]) // [0, 2] */
export const roundTimesteps = (ts: number[]): number[] => ts.map(roundHalfEven);
