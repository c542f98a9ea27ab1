/**
 * Fused scaled-dot-product attention, our own kernels (native/kernels): tiled online
 * softmax on CPU (FlashAttention's algorithm, O(tokens) extra memory) and a
 * FlashAttention-2-style CUDA kernel. The same op, `torch_diffusion::attention`, is what
 * models exported with `--fused-attention` call.
 */
import { call } from "./dispatch";
import { invalid } from "./errors";
import { assertTensor, type Tensor } from "./tensor";

/** A given scale must be a positive finite number: NaN or ±Infinity would turn every score into NaN or 0. */
function assertScale(scale: unknown): void {
  if (scale === undefined || scale === null) return; // the default, 1/sqrt(head_dim)
  if (typeof scale !== "number" || !Number.isFinite(scale) || scale <= 0) throw invalid("positive finite number", "attention options.scale", scale);
}

export interface AttentionOptions {
  /** Multiplies q·kᵀ; default 1/sqrt(head_dim). */
  scale?: number;
  /** Additive float mask or boolean mask (true = attend), broadcastable to [B, H, Q, K]. */
  mask?: Tensor;
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [B, H, Q, D], k and v [B, H, K, D]; float32, float16
 * or bfloat16 with float32 accumulation; differentiable.
 * @example const out = attention(q, k, v); // (B, H, Q, D)
 * @example const cross = attention(q, textK, textV, { mask: padMask }); // K = 77 text tokens
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  assertTensor(q, "attention q");
  assertTensor(k, "attention k");
  assertTensor(v, "attention v");
  if (options.mask !== undefined) assertTensor(options.mask, "attention options.mask");
  assertScale(options.scale);
  return call("torch_diffusion::attention", [q, k, v, options.scale ?? null, options.mask ?? null]);
}

/**
 * The unfused math reference, softmax(q·kᵀ·scale + mask)·v with ATen ops: materializes the
 * [B, H, Q, K] scores. Used by tests and benchmarks as the baseline.
 */
export function naiveAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  assertScale(options.scale);
  const scale = options.scale ?? 1 / Math.sqrt(q.shape[3]);
  let scores = q.matmul(k.transpose(-2, -1)).mul(scale); // (B, H, Q, K)
  if (options.mask) {
    scores = options.mask.dtype === "bool" ? call<Tensor>("aten::masked_fill.Scalar", [scores, options.mask.logicalNot(), -Infinity]) : scores.add(options.mask);
  }
  return scores.softmax(-1).matmul(v); // (B, H, Q, D)
}
