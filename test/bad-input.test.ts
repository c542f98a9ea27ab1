import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";

const junk: unknown[] = [undefined, null, 0, -1, 1.5, NaN, Infinity, "x", "", true, [], [1, "a"], {}, { shape: [1] }, () => 1, Symbol("s"), 10n, new Uint8Array(3), Object.create(td.Tensor.prototype)];

describe("bad input never crashes the process", () => {
  it("exact messages for common mistakes", () => {
    const x = td.ones([2, 3]);
    expect(() => x.add("a" as unknown as number)).toThrow("aten::add.Tensor: argument 'other': expected a Tensor but received string \"a\"");
    expect(() => x.matmul(td.ones([2, 3]))).toThrow("aten::matmul: mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3) (self: [2, 3] float32 cpu, other: [2, 3] float32 cpu)");
    expect(() => x.reshape([4, 4])).toThrow("aten::reshape: shape '[4, 4]' is invalid for input of size 6");
    expect(() => x.add(td.ones([4]))).toThrow(/aten::add.Tensor: The size of tensor a \(3\) must match the size of tensor b \(4\)/);
    expect(() => x.to("cuda")).toThrow(/aten::to.device: .*(not linked with support for cuda|no CUDA GPUs|CUDA)/);
    expect(() => x.to("float99" as td.DType)).toThrow("aten::to.device: argument 'device': Invalid device string: 'float99'");
    expect(() => td.tensor([1, 2, 3], [2, 2])).toThrow("tensor: 3 values do not fill shape [2, 2] (4 elements)");
    expect(() => td.tensor([[1, 2], [3]])).toThrow("tensor: ragged nested array (length 1 at depth 1, expected 2)");
    expect(() => td.zeros([-1])).toThrow("Expected array of non-negative integers for shape but received array of length 1");
    expect(() => td.op("aten::nope")).toThrow('op: unknown op "aten::nope"');
    expect(() => td.op("aten::add.Tensor", x)).toThrow("aten::add.Tensor: missing argument 'other'");
    expect(() => td.op("aten::add.Tensor", x, x, 1, 2)).toThrow("aten::add.Tensor: expected at most 3 arguments but received 4");
    expect(() => td.op("aten::add.Tensor", x, x, { beta: 1 })).toThrow("aten::add.Tensor: unknown keyword argument");
    expect(() => td.cat([])).toThrow("Expected non-empty array of Tensors for tensors but received array of length 0");
    expect(() => td.interpolate(x, { scaleFactor: 2 })).toThrow("interpolate: expected an NCHW tensor (4 dimensions) but received shape [2, 3]");
    expect(() => td.mseLoss(x, x, "avg" as "mean")).toThrow('Expected one of none, mean, sum for reduction but received "avg" of type string');
    expect(() => new (td.Tensor as unknown as new () => Tensor)()).toThrow("Tensor: tensors are created by tensor(), zeros(), randn() and the other factories, not with new");
    expect(() => x.index(0.5)).toThrow("Expected integer for index but received 0.5 of type number");
    expect(() => td.setNumThreads(0)).toThrow("Expected positive integer for setNumThreads(n) but received 0 of type number");
  });

  it("hundreds of wrong calls all throw Errors with messages", () => {
    const x = td.ones([2, 2]);
    const calls: ((v: unknown) => unknown)[] = [
      (v) => td.tensor(v as number[]), (v) => td.tensor([1, 2], v as number[]), (v) => td.tensor([1], [1], { dtype: v as td.DType }),
      (v) => td.zeros(v as number[]), (v) => td.randn([2], { generator: v as td.Generator }), (v) => td.full([2], v as number),
      (v) => x.add(v as Tensor), (v) => x.mul(v as Tensor), (v) => x.reshape(v as number[]), (v) => x.permute(v as number[]),
      (v) => x.sum(v as number), (v) => x.slice(v as number, 0, 1), (v) => x.index(v as number), (v) => x.to(v as string),
      (v) => x.clamp(v as number, v as number), (v) => td.cat(v as Tensor[]), (v) => td.stack([x, v as Tensor]), (v) => td.where(v as Tensor, x, x),
      (v) => td.conv2d(x, v as Tensor), (v) => td.interpolate(v as Tensor, { size: [2, 2] }), (v) => td.op(v as string),
      (v) => td.op("aten::add.Tensor", x, v), (v) => td.load(v as string), (v) => td.manualSeed(v as number), (v) => new td.Generator(v as number),
      (v) => td.setNumThreads(v as number), (v) => { x.requiresGrad = v as boolean; }, (v) => { x.grad = v as Tensor; }, (v) => x.backward(v as Tensor),
      (v) => td.deserialize(v as Buffer), (v) => td.serialize(v), (v) => new td.AdamW(v as Tensor[]), (v) => td.mseLoss(x, v as Tensor),
    ];
    let thrown = 0;
    let total = 0;
    for (const call of calls) {
      for (const value of junk) {
        total++;
        try {
          td.tidy(() => {
            call(value);
          });
        } catch (error) {
          thrown++;
          expect(error).toBeInstanceOf(Error);
          expect((error as Error).message.length).toBeGreaterThan(5);
          expect((error as Error).message).not.toMatch(/Exception raised from|frame #0/);
        }
      }
    }
    expect(total).toBeGreaterThan(500);
    expect(thrown).toBeGreaterThan(total * 0.8);
    expect(x.toArray()).toEqual([[1, 1], [1, 1]]);
  });
});
