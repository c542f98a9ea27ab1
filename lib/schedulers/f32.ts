/**
 * Float32 scalar arithmetic in plain JS numbers.
 *
 * diffusers keeps most schedule scalars (`alphas_cumprod[t]`, `sigmas[i]`, ...) as 0-d float32
 * torch tensors, so `1 - alpha_prod_t`, `alpha ** 0.5`, `exp(-h)` round to float32 after every
 * operation, while other values are Python floats (float64). These helpers reproduce the
 * float32 path: each takes float32 values and returns the float32-rounded result.
 *
 * `exp32`/`log32`/`expm1_32` round the correctly rounded float64 result; libtorch's vectorised
 * float kernels are within 1 ulp of that, which is far below the parity tolerances (1e-5).
 */

/** Rounds to float32. @example f32(0.1) // 0.10000000149011612 */
export const f32 = Math.fround;

/** float32 a + b. @example add32(f32(0.1), f32(0.2)) */
export const add32 = (a: number, b: number): number => Math.fround(a + b);
/** float32 a - b. @example sub32(1, f32(0.9)) */
export const sub32 = (a: number, b: number): number => Math.fround(a - b);
/** float32 a · b. @example mul32(f32(0.1), 3) */
export const mul32 = (a: number, b: number): number => Math.fround(a * b);
/** float32 a / b. @example div32(1, 3) */
export const div32 = (a: number, b: number): number => Math.fround(a / b);
/** float32 √a (correctly rounded, as torch). @example sqrt32(2) */
export const sqrt32 = (a: number): number => Math.fround(Math.sqrt(a));
/** float32 eᵃ. @example exp32(-1) */
export const exp32 = (a: number): number => Math.fround(Math.exp(a));
/** float32 ln a. @example log32(10) */
export const log32 = (a: number): number => Math.fround(Math.log(a));
/** float32 eᵃ - 1. @example expm1_32(1e-3) */
export const expm1_32 = (a: number): number => Math.fround(Math.expm1(a));

/** `torch.pow(x, p)` for a float32 0-d tensor and a Python scalar exponent. @example pow32(f32(1.1), 2) */
export function pow32(a: number, p: number): number {
  if (p === 2) return Math.fround(a * a);
  if (p === 0.5) return Math.fround(Math.sqrt(a));
  if (p === 1) return a;
  if (p === 3) return Math.fround(Math.fround(a * a) * a);
  return Math.fround(Math.pow(a, p));
}

const F32 = new Float32Array(1);
const I32 = new Int32Array(F32.buffer);

/** The next float32 above `x` (x must be a float32 value). @example nextUp32(1) // 1.0000001192092896 */
export function nextUp32(x: number): number {
  if (Number.isNaN(x) || x === Infinity) return x;
  if (x === 0) return 1.401298464324817e-45;
  F32[0] = x;
  I32[0] += x > 0 ? 1 : -1;
  return F32[0];
}

/** The next float32 below `x` (x must be a float32 value). @example nextDown32(1) // 0.9999999403953552 */
export function nextDown32(x: number): number {
  return -nextUp32(-x);
}

/**
 * Fused multiply-add rounded once to float32: round32(a * b + c) for float32 a, b, c.
 * GCC contracts `start + step * idx` into an FMA in torch's CPU `linspace` kernel, so the
 * float32 `torch.linspace` that builds diffusers' beta schedules needs this.
 *
 * @example
 * fma32(Math.fround(0.1), 3, Math.fround(0.2)); // 0.5000000596046448
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b; // exact: two 24-bit significands fit in 53 bits
  const s = p + c;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb); // exact rounding error of s (TwoSum)
  let r = Math.fround(s);
  if (err !== 0 && r !== s) {
    const other = r > s ? nextDown32(r) : nextUp32(r);
    if (s === (r + other) / 2) r = err > 0 ? Math.max(r, other) : Math.min(r, other);
  }
  return r;
}

/** `numpy.round` / `torch.round`: round half to even. @example roundHalfEven(2.5) // 2 */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
