/**
 * The few numpy/torch array routines diffusers' schedule code calls, reproduced with the same
 * arithmetic so the resulting schedules match bit for bit. Values are float64 unless a name
 * says float32 (then every element is a `Math.fround` value).
 */
import { f32, fma32, roundHalfEven } from "./f32";

/**
 * `numpy.linspace(start, stop, num)` (float64): `i * step + start`, last element exactly `stop`.
 *
 * @example
 * numpyLinspace(0, 999, 4); // [0, 333, 666, 999]
 */
export function numpyLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const delta = stop - start;
  const step = delta / div;
  const out = new Array<number>(Math.max(0, num));
  for (let i = 0; i < num; i++) {
    out[i] = div <= 0 ? i * delta + start : step === 0 ? (i / div) * delta + start : i * step + start;
  }
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/**
 * `numpy.arange(start, stop, step)` for float64: length `ceil((stop - start) / step)`, element
 * `i` is `start + i * delta` with `delta = (start + step) - start`, as numpy's fill does.
 *
 * @example
 * numpyArange(1000, 0, -1000 / 3); // [1000, 666.666..., 333.333...]
 */
export function numpyArange(start: number, stop: number, step: number): number[] {
  const len = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(len);
  if (len > 0) out[0] = start;
  if (len > 1) out[1] = start + step;
  const delta = start + step - start;
  for (let i = 2; i < len; i++) out[i] = start + i * delta;
  return out;
}

/** Element-wise `numpy.round` (half to even). @example npRound([0.5, 1.5]) // [0, 2] */
export const npRound = (xs: number[]): number[] => xs.map(roundHalfEven);

/**
 * `numpy.interp(x, xp, fp)` for increasing `xp`: `slope * (x - xp[j]) + fp[j]`.
 *
 * @example
 * numpyInterp([0.5], [0, 1], [2, 4]); // [3]
 */
export function numpyInterp(xs: ArrayLike<number>, xp: ArrayLike<number>, fp: ArrayLike<number>): number[] {
  const n = xp.length;
  const out = new Array<number>(xs.length);
  for (let k = 0; k < xs.length; k++) {
    const x = xs[k];
    if (x <= xp[0]) out[k] = fp[0];
    else if (x >= xp[n - 1]) out[k] = fp[n - 1];
    else {
      let lo = 0;
      let hi = n - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (xp[mid] <= x) lo = mid;
        else hi = mid;
      }
      const slope = (fp[lo + 1] - fp[lo]) / (xp[lo + 1] - xp[lo]);
      out[k] = slope * (x - xp[lo]) + fp[lo];
    }
  }
  return out;
}

/**
 * float32 `torch.linspace(start, end, steps)` on CPU, reproducing libtorch's kernel: a step
 * computed in float32, FMA-contracted `start + step * i` (first half) / `end - step * (n-1-i)`
 * (second half) at the start of each 8-wide vector and in the scalar tail, and
 * `base + j * step` within a vector.
 *
 * @example
 * torchLinspace32(0.0001, 0.02, 1000)[999]; // 0.019999999552965164
 */
export function torchLinspace32(start: number, end: number, steps: number): number[] {
  const s = f32(start);
  const e = f32(end);
  const out = new Array<number>(steps);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const W = 8;
  const at = (i: number) => (i < half ? fma32(step, i, s) : fma32(-step, steps - i - 1, e));
  let i = 0;
  for (; i <= steps - 2 * W; i += 2 * W) {
    for (const blk of [i, i + W]) {
      const base = at(blk);
      out[blk] = base;
      for (let j = 1; j < W; j++) out[blk + j] = f32(base + f32(j * step));
    }
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

/** `torch.cumprod` of a float32 vector on CPU: accumulated in float64, stored as float32. @example cumprod32([0.5, 0.5]) // [0.5, 0.25] */
export function cumprod32(xs: ArrayLike<number>): number[] {
  const out = new Array<number>(xs.length);
  let acc = 1;
  for (let i = 0; i < xs.length; i++) {
    acc *= xs[i];
    out[i] = f32(acc);
  }
  return out;
}
