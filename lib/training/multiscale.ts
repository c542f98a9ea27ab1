/**
 * Simple Diffusion's multiscale training loss (Hoogeboom, Heek & Salimans 2023, "simple
 * diffusion", §3.3): the loss taken on the image's own resolution and on average-pooled
 * versions of prediction and target down to a base resolution, the coarser ones weighted more:
 *
 *   L_{s×s} = (1/s²)·E‖D_s[target] − D_s[prediction]‖²,   L^M_d = Σ_{s ∈ {b, 2b, 4b, …, d}} (1/s)·L_{s×s}
 *
 * with D_s average pooling to s×s (a linear map, so the same loss serves ε-, v- or x₀-targets) and
 * b the base resolution (32 in the paper). With b = d it is (1/d)·MSE: use the plain MSE then.
 */
import { assertInteger } from "../errors";
import { tidy, type Tensor } from "../tensor";
import type { LossFn } from "./options";

/**
 * (B, C, H, W) -> (B, C, H/f, W/f) by averaging f×f blocks (`F.avg_pool2d(x, f)`).
 * @example avgPool(images, 2) // 64×64 -> 32×32
 */
export function avgPool(x: Tensor, factor: number): Tensor {
  if (factor === 1) return x;
  const [b, c, h, w] = x.shape;
  if (h % factor !== 0 || w % factor !== 0) throw new Error(`avgPool: ${h}×${w} is not divisible by ${factor}`);
  return x.reshape([b, c, h / factor, factor, w / factor, factor]).mean([3, 5]); // (B, C, H/f, W/f)
}

/** The resolutions the multiscale loss takes for side `size`: size, size/2, ... down to `base`. @example multiscaleResolutions(64, 16) // [64, 32, 16] */
export function multiscaleResolutions(size: number, base: number): number[] {
  const out: number[] = [];
  for (let s = size; s >= base; s /= 2) {
    out.push(s);
    if (s % 2 !== 0) break;
  }
  if (out[out.length - 1] !== base) throw new Error(`multiscaleLoss: base resolution ${base} is not the image side ${size} halved some times`);
  return out;
}

/**
 * L^M_d of a prediction and its target (B, C, d, d) -> a 0-d tensor.
 * @example const loss = multiscaleMSE(prediction, target, { baseResolution: 32 }); // (1/64)·L_64 + (1/32)·L_32
 */
export function multiscaleMSE(prediction: Tensor, target: Tensor, options: { baseResolution?: number } = {}): Tensor {
  const base = options.baseResolution ?? 32;
  assertInteger(base, "multiscaleLoss baseResolution", 1);
  const [, , h, w] = target.shape;
  if (h !== w) throw new Error(`multiscaleLoss: square images only, not ${h}×${w}`);
  if (prediction.shape.join() !== target.shape.join()) throw new Error(`multiscaleLoss: prediction [${prediction.shape}] and target [${target.shape}] differ`);
  const sizes = multiscaleResolutions(h, base);
  return tidy(() => {
    const diff = prediction.sub(target); // D is linear: D[p] − D[t] = D[p − t]
    let total: Tensor | null = null;
    for (const s of sizes) {
      const term = avgPool(diff, h / s).square().mean().div(s); // (1/s)·L_{s×s}
      total = total ? total.add(term) : term;
    }
    return total!;
  });
}

/**
 * {@link multiscaleMSE} as a Trainer `loss`.
 * @example await td.train(uvit, data, { objective: "v_prediction", loss: multiscaleLoss({ baseResolution: 32 }), ... });
 */
export function multiscaleLoss(options: { baseResolution?: number } = {}): LossFn {
  const base = options.baseResolution ?? 32;
  assertInteger(base, "multiscaleLoss baseResolution", 1);
  return (prediction, target) => multiscaleMSE(prediction, target, { baseResolution: base });
}
