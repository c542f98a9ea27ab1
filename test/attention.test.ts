import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { maxRelativeError } from "./helpers";

const g = new td.Generator(11);
const rnd = (shape: number[], dtype: td.DType = "float32") => td.randn(shape, { generator: g }).to(dtype);

function expectMatchesReference(q: Tensor, k: Tensor, v: Tensor, options: td.AttentionOptions = {}, tolerance = 1e-5): void {
  td.tidy(() => {
    const got = td.attention(q, k, v, options);
    expect(got.dtype).toBe(q.dtype);
    expect(got.shape).toEqual([q.shape[0], q.shape[1], q.shape[2], v.shape[3]]);
    const mask = options.mask && options.mask.dtype !== "bool" ? options.mask.float() : options.mask;
    const ref = td.naiveAttention(q.float(), k.float(), v.float(), { ...options, mask });
    expect(maxRelativeError(got.toFloat32Array(), ref.toFloat32Array())).toBeLessThanOrEqual(tolerance);
  });
}

describe("fused attention equals the math reference", () => {
  it("self-attention over the head dims SD, SDXL and DiT use", () => {
    for (const d of [40, 64, 72, 80, 128, 160]) expectMatchesReference(rnd([2, 3, 70, d]), rnd([2, 3, 70, d]), rnd([2, 3, 70, d]));
  });

  it("cross-attention with 77 text tokens, odd sizes and a custom scale", () => {
    expectMatchesReference(rnd([1, 8, 129, 40]), rnd([1, 8, 77, 40]), rnd([1, 8, 77, 40]));
    expectMatchesReference(rnd([3, 1, 5, 17]), rnd([3, 1, 3, 17]), rnd([3, 1, 3, 17]), { scale: 0.3 });
  });

  it("additive and boolean masks, broadcast from [B,1,1,K] and [Q,K]", () => {
    const q = rnd([2, 2, 33, 64]);
    const k = rnd([2, 2, 77, 64]);
    const v = rnd([2, 2, 77, 64]);
    expectMatchesReference(q, k, v, { mask: rnd([2, 1, 1, 77]) });
    expectMatchesReference(q, k, v, { mask: rnd([33, 77]) });
    const keep = td.arange(77).lt(50).reshape([1, 1, 1, 77]).expand([2, 1, 1, 77]).contiguous(); // pad tokens masked out
    expectMatchesReference(q, k, v, { mask: keep });
  });

  it("non-contiguous inputs (transposed [B, T, H, D] views)", () => {
    const q = rnd([2, 50, 4, 64]).transpose(1, 2);
    const k = rnd([2, 60, 4, 64]).transpose(1, 2);
    const v = rnd([2, 60, 4, 64]).transpose(1, 2);
    expect(q.isContiguous()).toBe(false);
    expectMatchesReference(q, k, v);
  });

  it("float16 and bfloat16 inputs with float32 accumulation", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      expectMatchesReference(rnd([1, 4, 96, 64], dtype), rnd([1, 4, 77, 64], dtype), rnd([1, 4, 77, 64], dtype), {}, dtype === "float16" ? 2e-3 : 1e-2);
    }
  });

  it("gradients of q, k and v equal the reference's", () => {
    const make = () => [rnd([1, 2, 20, 40]), rnd([1, 2, 24, 40]), rnd([1, 2, 24, 40])];
    const [q0, k0, v0] = make();
    const upstream = rnd([1, 2, 20, 40]);
    const grads = (fn: typeof td.attention) => {
      const [q, k, v] = [q0, k0, v0].map((t) => t.clone().requiresGrad_());
      fn(q, k, v).mul(upstream).sum().backward();
      return [q, k, v].map((t) => t.grad!.toFloat32Array());
    };
    const ours = grads(td.attention);
    const ref = grads(td.naiveAttention);
    ours.forEach((grad, i) => expect(maxRelativeError(grad, ref[i])).toBeLessThanOrEqual(1e-4));
  });
});

describe("fused attention rejects bad inputs with clear errors", () => {
  const q = rnd([1, 2, 8, 16]);
  it.each([
    ["rank", () => td.attention(q.index(0), q, q), /^torch_diffusion::attention: expected q to be a 4-D tensor \[batch, heads, tokens, head_dim\] but got shape \[2, 8, 16\]/],
    ["dtype mix", () => td.attention(q, q.half(), q), /same dtype/],
    ["head_dim mismatch", () => td.attention(q, rnd([1, 2, 8, 32]), rnd([1, 2, 8, 32])), /same head_dim/],
    ["k/v length mismatch", () => td.attention(q, q, rnd([1, 2, 9, 16])), /same number of tokens/],
    ["mask shape", () => td.attention(q, q, q, { mask: rnd([3, 8]) }), /mask/],
    ["integer dtype", () => td.attention(q.long(), q.long(), q.long()), /expected q, k, v to be Float, Half, BFloat16/],
    ["not a tensor", () => td.attention(q, q, "v" as unknown as Tensor), /Expected Tensor for attention v/],
  ])("%s", (_name, run, message) => {
    expect(run).toThrow(message);
  });
});
