/**
 * Functions over several tensors and the neural-network building blocks, named after
 * torch / torch.nn.functional. All go through the generic op path.
 */
import { call } from "./dispatch";
import { assertOneOf, invalid } from "./errors";
import { assertTensor, type Scalar, type Tensor, type TensorOrScalar } from "./tensor";

/** @example cat([a, b], 1) */
export function cat(tensors: Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw invalid("non-empty array of Tensors", "tensors", tensors);
  return call("aten::cat", [tensors, dim]);
}
/** @example stack([a, b]) // new leading dimension */
export function stack(tensors: Tensor[], dim = 0): Tensor {
  if (!Array.isArray(tensors) || tensors.length === 0) throw invalid("non-empty array of Tensors", "tensors", tensors);
  return call("aten::stack", [tensors, dim]);
}
/** Elementwise `condition ? a : b` with broadcasting. @example where(mask, x, 0) */
export function where(condition: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const scalar = (v: unknown): v is Scalar => typeof v === "number" || typeof v === "boolean";
  if (scalar(a) && scalar(b)) return call("aten::where.Scalar", [condition, a, b]);
  if (scalar(a)) return call("aten::where.ScalarSelf", [condition, a, b]);
  if (scalar(b)) return call("aten::where.ScalarOther", [condition, a, b]);
  return call("aten::where.self", [condition, a, b]);
}
export function matmul(a: Tensor, b: Tensor): Tensor { return call("aten::matmul", [a, b]); }
export function bmm(a: Tensor, b: Tensor): Tensor { return call("aten::bmm", [a, b]); }
/** beta * input + alpha * (batch1 @ batch2). */
export function baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, options: { beta?: number; alpha?: number } = {}): Tensor {
  return call("aten::baddbmm", [input, batch1, batch2], { beta: options.beta ?? 1, alpha: options.alpha ?? 1 });
}
export function softmax(x: Tensor, dim: number): Tensor { return call("aten::softmax.int", [x, dim]); }
export function logSoftmax(x: Tensor, dim: number): Tensor { return call("aten::log_softmax.int", [x, dim]); }
export function lerp(start: Tensor, end: Tensor, weight: TensorOrScalar): Tensor { return start.lerp(end, weight); }
/** y = x @ weightᵀ + bias. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor { return call("aten::linear", [x, weight, bias]); }

export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}
/** @example conv2d(x, weight, bias, { padding: 1 }) */
export function conv2d(input: Tensor, weight: Tensor, bias: Tensor | null = null, options: Conv2dOptions = {}): Tensor {
  return call("aten::conv2d", [input, weight, bias, options.stride ?? 1, options.padding ?? 0, options.dilation ?? 1, options.groups ?? 1]);
}
/** @example groupNorm(x, 32, gamma, beta, 1e-5) */
export function groupNorm(input: Tensor, numGroups: number, weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  return call("aten::group_norm", [input, numGroups, weight, bias, eps, true]);
}
/** Normalizes over the trailing `normalizedShape` dimensions. */
export function layerNorm(input: Tensor, normalizedShape: number[], weight: Tensor | null = null, bias: Tensor | null = null, eps = 1e-5): Tensor {
  return call("aten::layer_norm", [input, normalizedShape, weight, bias, eps, true]);
}

const REDUCTIONS = ["none", "mean", "sum"] as const;
/** Mean squared error, like F.mse_loss. @example mseLoss(pred, target) */
export function mseLoss(input: Tensor, target: Tensor, reduction: "none" | "mean" | "sum" = "mean"): Tensor {
  assertOneOf(reduction, REDUCTIONS, "reduction");
  return call("aten::mse_loss", [input, target, REDUCTIONS.indexOf(reduction)]);
}

export interface InterpolateOptions {
  size?: number[];
  scaleFactor?: number | number[];
  mode?: "nearest" | "bilinear" | "bicubic" | "nearest-exact";
  alignCorners?: boolean;
  antialias?: boolean;
}
/**
 * Resizes the spatial dimensions of an NCHW tensor, like F.interpolate.
 * @example interpolate(x, { scaleFactor: 2, mode: "nearest" })
 */
export function interpolate(input: Tensor, options: InterpolateOptions): Tensor {
  assertTensor(input, "input");
  if (input.ndim !== 4) throw new Error(`interpolate: expected an NCHW tensor (4 dimensions) but received shape [${input.shape.join(", ")}]`);
  const mode = options.mode ?? "nearest";
  assertOneOf(mode, ["nearest", "bilinear", "bicubic", "nearest-exact"] as const, "options.mode");
  if ((options.size === undefined) === (options.scaleFactor === undefined)) throw new Error("interpolate: give exactly one of options.size and options.scaleFactor");
  const size = options.size ?? null;
  const scales = options.scaleFactor === undefined ? null : Array.isArray(options.scaleFactor) ? options.scaleFactor : [options.scaleFactor, options.scaleFactor];
  switch (mode) {
    case "nearest": return call("aten::upsample_nearest2d.vec", [input, size, scales]);
    case "nearest-exact": return call("aten::_upsample_nearest_exact2d.vec", [input, size, scales]);
    case "bilinear":
      if (options.antialias) return call("aten::_upsample_bilinear2d_aa.vec", [input, size, options.alignCorners ?? false, scales]);
      return call("aten::upsample_bilinear2d.vec", [input, size, options.alignCorners ?? false, scales]);
    case "bicubic":
      if (options.antialias) return call("aten::_upsample_bicubic2d_aa.vec", [input, size, options.alignCorners ?? false, scales]);
      return call("aten::upsample_bicubic2d.vec", [input, size, options.alignCorners ?? false, scales]);
  }
}
