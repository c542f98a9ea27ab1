import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { expectClose, fromEncoded, maxRelativeError, readFixture, type EncodedTensor } from "./helpers";

interface AutogradRefs {
  x: EncodedTensor; w: EncodedTensor; b: EncodedTensor; loss: number; w_grad: EncodedTensor; b_grad: EncodedTensor;
  adamw: number[][]; sgd: number[][]; sgd_nesterov: number[][]; adamw_clip: number[][];
}
const refs = readFixture<{ autograd: AutogradRefs }>("bridge_refs.json").autograd;
const INITIAL = [[0.5, -0.3], [0.1, 0.8], [-0.6, 0.2], [0.3, 0.3]];

function train(makeOptimizer: (params: Tensor[]) => td.AdamW | td.SGD, clip?: number): number[][] {
  const x = fromEncoded(refs.x);
  const p = td.tensor(INITIAL).requiresGrad_();
  const opt = makeOptimizer([p]);
  const trace: number[][] = [];
  for (let step = 0; step < 5; step++) {
    opt.zeroGrad();
    td.tidy(() => x.matmul(p).sub(1).pow(2).mean().backward());
    if (clip !== undefined) td.clipGradNorm([p], clip);
    opt.update();
    trace.push(Array.from(p.toFloat64Array()));
  }
  return trace;
}

describe("autograd", () => {
  it("backward fills .grad like PyTorch", () => {
    const x = fromEncoded(refs.x);
    const w = fromEncoded(refs.w).requiresGrad_();
    const b = fromEncoded(refs.b).requiresGrad_();
    const loss = x.matmul(w).add(b).tanh().pow(2).mean();
    expect(Math.abs(loss.item() - refs.loss)).toBeLessThan(1e-6);
    loss.backward();
    expectClose(w.grad!, refs.w_grad, 1e-6);
    expectClose(b.grad!, refs.b_grad, 1e-6);
    expect(w.isLeaf).toBe(true);
    expect(loss.requiresGrad).toBe(true);
  });

  it("noGrad stops recording and restores the previous mode", () => {
    const w = td.ones([2]).requiresGrad_();
    const y = td.noGrad(() => w.mul(2));
    expect(y.requiresGrad).toBe(false);
    expect(td.isGradEnabled()).toBe(true);
    expect(w.mul(2).requiresGrad).toBe(true);
    expect(td.noGrad(() => td.enableGrad(() => w.mul(2)).requiresGrad)).toBe(true);
  });

  it("detach cuts the graph; backward on a non-scalar needs a gradient", () => {
    const w = td.ones([2]).requiresGrad_();
    expect(w.mul(2).detach().requiresGrad).toBe(false);
    expect(() => w.mul(2).backward()).toThrow(/Tensor.backward: grad can be implicitly created only for scalar outputs/);
    w.mul(3).backward(td.ones([2]));
    expect(w.grad!.toArray()).toEqual([3, 3]);
  });

  it("rejects requiresGrad on integer tensors with a clear error", () => {
    expect(() => td.arange(3).requiresGrad_()).toThrow(/Tensor.requiresGrad: .*floating point/);
  });
});

describe("optimizers match torch.optim", () => {
  it("AdamW", () => {
    const trace = train((p) => new td.AdamW(p, { lr: 0.05, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 }));
    trace.forEach((row, i) => expect(maxRelativeError(row, refs.adamw[i])).toBeLessThan(1e-6));
  });
  it("SGD with momentum and weight decay", () => {
    const trace = train((p) => new td.SGD(p, { lr: 0.1, momentum: 0.9, weightDecay: 0.01 }));
    trace.forEach((row, i) => expect(maxRelativeError(row, refs.sgd[i])).toBeLessThan(1e-6));
  });
  it("SGD with Nesterov momentum", () => {
    const trace = train((p) => new td.SGD(p, { lr: 0.1, momentum: 0.9, nesterov: true }));
    trace.forEach((row, i) => expect(maxRelativeError(row, refs.sgd_nesterov[i])).toBeLessThan(1e-6));
  });
  it("AdamW after clipGradNorm", () => {
    const trace = train((p) => new td.AdamW(p, { lr: 0.05 }), 0.1);
    trace.forEach((row, i) => expect(maxRelativeError(row, refs.adamw_clip[i])).toBeLessThan(1e-6));
  });

  it("state survives save and load: a resumed run equals an uninterrupted one", () => {
    const x = fromEncoded(refs.x);
    const stepOnce = (p: Tensor, opt: td.AdamW) => {
      opt.zeroGrad();
      td.tidy(() => x.matmul(p).sub(1).pow(2).mean().backward());
      opt.update();
    };
    const p1 = td.tensor(INITIAL).requiresGrad_();
    const o1 = new td.AdamW([p1], { lr: 0.05 });
    for (let i = 0; i < 4; i++) stepOnce(p1, o1);

    const p2 = td.tensor(INITIAL).requiresGrad_();
    const o2 = new td.AdamW([p2], { lr: 0.05 });
    for (let i = 0; i < 2; i++) stepOnce(p2, o2);
    const saved = td.deserialize(td.serialize({ params: [p2.detach()], optimizer: o2.stateDict() })) as { params: Tensor[]; optimizer: td.OptimizerState };
    const p3 = saved.params[0].clone().requiresGrad_();
    const o3 = new td.AdamW([p3], { lr: 0.05 });
    o3.loadStateDict(saved.optimizer);
    for (let i = 0; i < 2; i++) stepOnce(p3, o3);
    expect(Array.from(p3.toFloat32Array())).toEqual(Array.from(p1.toFloat32Array()));
  });

  it("validates options", () => {
    expect(() => new td.AdamW([], {})).toThrow("Expected non-empty array of parameter Tensors for AdamW params but received array of length 0");
    expect(() => new td.SGD([td.ones([1])], { lr: -1 })).toThrow("Expected non-negative number for SGD lr but received -1 of type number");
  });
});

// Ops on ≥ 65,536 elements, module calls and backward run on the executor thread (native/executor.h);
// the caller's grad mode, errors and thread count must cross over with them.
describe("work on the executor thread", () => {
  const big = 300 * 300;

  it("records grad for large ops like small ones, and not under noGrad", () => {
    td.tidy(() => {
      for (const n of [16, big]) {
        const x = td.full([n], 3).requiresGrad_();
        const y = x.mul(x).sum(); // d/dx = 2x = 6
        expect(y.requiresGrad).toBe(true);
        y.backward();
        expect(Array.from(new Set(x.grad!.toFloat32Array()))).toEqual([6]);
        expect(td.noGrad(() => x.mul(2)).requiresGrad).toBe(false);
      }
    });
  });

  it("gives large ops' errors in the same words", () => {
    td.tidy(() => {
      const [a, b] = [td.zeros([big]), td.zeros([big + 1])];
      expect(() => a.add(b)).toThrow(/^aten::add\.Tensor: The size of tensor a \(90000\) must match the size of tensor b \(90001\).* \(self: \[90000\] float32 cpu, other: \[90001\] float32 cpu\)$/s);
    });
  });

  it("getNumThreads reports what setNumThreads set; large matmuls give the same values at any count", () => {
    const before = td.getNumThreads();
    try {
      td.tidy(() => {
        const m = td.randn([256, 256], { generator: new td.Generator(1) });
        const reference = m.matmul(m).toFloat32Array();
        for (const threads of [1, 2, 1]) {
          td.setNumThreads(threads);
          expect(td.getNumThreads()).toBe(threads);
          expect(maxRelativeError(m.matmul(m).toFloat32Array(), reference)).toBeLessThan(1e-5);
        }
      });
    } finally {
      td.setNumThreads(before);
    }
  });
});
