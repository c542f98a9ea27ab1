import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { expectClose, fromEncoded, readFixture, type EncodedTensor } from "./helpers";

const refs = readFixture<{ ops: { inputs: Record<string, EncodedTensor>; cases: Record<string, EncodedTensor> } }>("bridge_refs.json").ops;
const I = Object.fromEntries(Object.entries(refs.inputs).map(([k, v]) => [k, td.keep(fromEncoded(v))])) as Record<string, Tensor>;
const { a, b, row, pos, img, w, bias, gamma, beta, m1, m2 } = I;

// Each case mirrors the PyTorch expression of the same name in scripts/fixtures/bridge_refs.py.
const cases: Record<string, () => Tensor> = {
  add: () => a.add(b), add_alpha: () => a.add(b, 0.5), add_scalar: () => a.add(1.5), sub_row: () => a.sub(row), mul: () => a.mul(b),
  mul_scalar: () => a.mul(0.1), div: () => a.div(pos), pow_scalar: () => pos.pow(0.5), pow_tensor: () => pos.pow(b.abs()), neg: () => a.neg(),
  abs: () => a.abs(), sqrt: () => pos.sqrt(), rsqrt: () => pos.rsqrt(), exp: () => a.exp(), log: () => pos.log(), sin: () => a.sin(), cos: () => a.cos(),
  tanh: () => a.tanh(), sigmoid: () => a.sigmoid(), silu: () => a.silu(), gelu: () => a.gelu(), gelu_tanh: () => a.gelu("tanh"),
  clamp: () => a.clamp(-0.5, 0.5), clamp_min: () => a.clamp(0), lerp: () => a.lerp(b, 0.3), lerp_t: () => a.lerp(b, pos),
  maximum: () => a.maximum(b), where: () => td.where(a.gt(b), a, b), where_scalar: () => td.where(a.gt(0), a, 0),
  gt: () => a.gt(b).float(), eq_scalar: () => a.round().eq(0).float(),
  sum: () => a.sum(), sum_dim: () => a.sum(1), sum_keep: () => a.sum([1, 2], true), mean: () => a.mean(), mean_dim: () => a.mean(-1),
  std: () => a.std(), std_dim: () => a.std(1), std_biased: () => a.std(2, { unbiased: false }), var: () => a.var(0),
  max: () => a.max(), max_dim_values: () => a.max(1).values, max_dim_indices: () => a.max(1).indices.float(), min: () => a.min(),
  argmax: () => a.argmax(2).float(), norm: () => a.norm(), norm_dim: () => a.norm(2, 2), quantile: () => a.flatten(1).quantile(0.9, 1),
  cumsum: () => a.cumsum(2), cumprod: () => pos.cumprod(1),
  reshape: () => a.reshape([6, 4]), permute: () => a.permute([2, 0, 1]), transpose: () => a.transpose(0, 2),
  unsqueeze: () => a.unsqueeze(1), expand: () => row.expand([3, 4]), slice: () => a.slice(1, 1, 3).slice(2, 0, null, 2), narrow: () => a.narrow(2, 1, 2),
  index: () => a.index(1), index_select: () => a.indexSelect(2, td.tensor([3, 0], undefined, { dtype: "int64" })), flip: () => a.flip(1), repeat: () => row.repeat([2, 2]),
  cat: () => td.cat([a, b], 1), stack: () => td.stack([a, b], 0), chunk1: () => a.chunk(2, 2)[1], split0: () => a.split(1, 1)[0],
  matmul: () => m1.matmul(m2), bmm: () => td.bmm(m1, m2), baddbmm: () => td.baddbmm(a, m1, m2, { beta: 0.5, alpha: 2 }),
  softmax: () => a.softmax(-1), log_softmax: () => a.logSoftmax(1),
  interp_nearest: () => td.interpolate(img, { scaleFactor: 2, mode: "nearest" }),
  interp_bilinear: () => td.interpolate(img, { size: [9, 9], mode: "bilinear" }),
  conv2d: () => td.conv2d(img, w, bias, { padding: 1 }), conv2d_stride: () => td.conv2d(img, w, null, { stride: 2 }),
  group_norm: () => td.groupNorm(img, 2, gamma, beta, 1e-5), layer_norm: () => td.layerNorm(a, [4], gamma, beta, 1e-5),
  mse: () => td.mseLoss(a, b), mse_sum: () => td.mseLoss(a, b, "sum"),
  to_half_back: () => a.half().float(), to_bf16_back: () => a.to("bfloat16").float(),
  arange: () => td.arange(0, 10, 3).float(), linspace: () => td.linspace(0, 1, 7), full: () => td.full([2, 2], 0.1),
};

// Ops that accumulate (convolutions, matrix products, reductions, norms) sum in an order that
// depends on the CPU kernel libtorch picks (AVX2, AVX-512, oneDNN, none): against numbers
// stored from another machine they agree to a few float32 ulps of the sum, not of each term.
// Elementwise ops round once and must match to 1e-6.
const ACCUMULATING = /^(sum|mean|std|var|norm|cumsum|cumprod|quantile|matmul|bmm|baddbmm|softmax|log_softmax|conv2d|group_norm|layer_norm|mse|interp)/;
const CROSS_CPU_TOLERANCE = 1e-5;

describe("typed ops equal PyTorch on the same inputs", () => {
  it("covers every reference case", () => {
    expect(Object.keys(cases).sort()).toEqual(Object.keys(refs.cases).sort());
  });
  for (const [name, run] of Object.entries(cases)) {
    it(name, () => {
      td.tidy(() => expectClose(run(), refs.cases[name], ACCUMULATING.test(name) ? CROSS_CPU_TOLERANCE : 1e-6));
    });
  }
});

describe("tensor creation and reading", () => {
  it("round-trips every dtype through TypedArrays", () => {
    const values = [0, 1, 2, 3, 4, 5];
    for (const dtype of ["float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8"] as const) {
      const t = td.tensor(values, [2, 3], { dtype });
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2, 3]);
      expect(Array.from(t.toFloat32Array())).toEqual(values);
      t.dispose();
    }
    const bools = td.tensor([true, false, true]);
    expect(bools.dtype).toBe("bool");
    expect(bools.toArray()).toEqual([true, false, true]);
    expect(td.tensor(new BigInt64Array([1n, -2n])).data()).toEqual(new BigInt64Array([1n, -2n]));
  });

  it("infers shapes from nested arrays and reads them back", () => {
    const t = td.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(t.index(1).index(2).item()).toBe(6);
    expect(t.ndim).toBe(2);
    expect(t.numel).toBe(6);
    expect(t.device).toBe("cpu");
    expect(String(t)).toBe("Tensor([2, 3] float32 cpu)");
  });

  it("makes the factories PyTorch has", () => {
    expect(td.zeros([2]).toArray()).toEqual([0, 0]);
    expect(td.ones([2], { dtype: "int32" }).dtype).toBe("int32");
    expect(td.arange(4).dtype).toBe("int64");
    expect(td.arange(0, 1, 0.25).toArray()).toEqual([0, 0.25, 0.5, 0.75]);
    expect(td.fullLike(td.zeros([3]), 2).toArray()).toEqual([2, 2, 2]);
    expect(td.onesLike(td.zeros([1, 2])).shape).toEqual([1, 2]);
    const r = td.randint(0, 5, [100], { generator: new td.Generator(0) }).toFloat32Array();
    expect(Math.min(...r)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...r)).toBeLessThan(5);
  });

  it("in-place ops return the same tensor object", () => {
    const t = td.zeros([3]);
    expect(t.add_(1)).toBe(t);
    expect(t.mul_(td.full([3], 3))).toBe(t);
    expect(t.toArray()).toEqual([3, 3, 3]);
    const view = t.view([3, 1]);
    expect(view.sharesStorageWith(t)).toBe(true);
  });

  it("calls any op by schema name through op()", () => {
    const x = td.tensor([-2, 0.5, 3]);
    expect((td.op("aten::hardtanh", x, -1, 1) as Tensor).toArray()).toEqual([-1, 0.5, 1]);
    expect((td.op("aten::clamp", x, { min: 0 }) as Tensor).toArray()).toEqual([0, 0.5, 3]);
    expect(td.opSchema("aten::add.Tensor")).toContain("Tensor self, Tensor other");
  });
});

// add / sub / mul / div are called unboxed (binding.binaryOp); the schema path must agree with them.
describe("unboxed arithmetic equals the aten op by schema", () => {
  it("in values and dtypes, for tensor and number operands of every kind", () => {
    td.tidy(() => {
      const operands: td.Tensor[] = [
        td.tensor([1.5, -2, 3]), td.tensor([1, 2, 3], undefined, { dtype: "int64" }), td.tensor([1, 0, 1], undefined, { dtype: "bool" }),
        td.tensor([0.5, 2, -1], undefined, { dtype: "float16" }), td.tensor([2, 3, 4], undefined, { dtype: "int32" }), td.tensor([7.25]),
      ];
      const numbers = [2, 2.5, -3, true];
      for (const [name, alpha] of [["add", 2], ["sub", 1], ["mul", undefined], ["div", undefined]] as const) {
        for (const a of operands) {
          for (const b of [...operands, ...numbers]) {
            const kind = typeof b === "object" ? "Tensor" : "Scalar";
            const args = alpha === undefined ? [a, b] : [a, b, alpha];
            let viaSchema: td.Tensor | Error;
            try {
              viaSchema = td.op(`aten::${name}.${kind}`, ...args) as td.Tensor;
            } catch (error) {
              viaSchema = error as Error;
            }
            const method = (a[name] as (...x: unknown[]) => td.Tensor).bind(a);
            if (viaSchema instanceof Error) {
              expect(() => method(...args.slice(1)), `${a.dtype} ${name} ${String(b)}`).toThrow(viaSchema.message);
              continue;
            }
            const unboxed = method(...args.slice(1));
            expect([unboxed.dtype, unboxed.shape], `${a.dtype} ${name} ${String(b)}`).toEqual([viaSchema.dtype, viaSchema.shape]);
            expect(Array.from(unboxed.toFloat64Array())).toEqual(Array.from(viaSchema.toFloat64Array()));
          }
        }
      }
    });
  });
});

describe("unboxed factories equal the aten op by schema", () => {
  const schemaNames = { zeros: "aten::zeros", ones: "aten::ones", randn: "aten::randn.generator", rand: "aten::rand.generator" } as const;
  const dtypes = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "bogus", "toString"] as const;
  // [0] and [] are edge sizes; 300×300 goes past the unboxed path's size limit (the executor's).
  const shapes = [[], [0], [2, 3], [1, 2, 1, 2], [300, 300]];

  it("in values, dtypes and errors, with and without a generator, on every device name", () => {
    td.tidy(() => {
      for (const [factory, schemaName] of Object.entries(schemaNames)) {
        const random = factory === "randn" || factory === "rand";
        for (const dtype of dtypes) {
          const refused = random && !["float32", "float64", "float16", "bfloat16"].includes(dtype);
          // libtorch's errors cost ~10 ms each: one shape for the dtypes a random draw refuses.
          for (const shape of refused ? [[2, 3]] : shapes) {
            for (const device of shape.length === 2 ? [undefined, "cpu", "cuda"] : [undefined, "cpu"]) {
              for (const seeded of random ? [true, false] : [false]) {
                const label = `${factory} ${dtype} [${shape}] ${device} ${seeded ? "generator" : "global"}`;
                const options = { dtype: dtype as td.DType, device };
                const schemaArgs: unknown[] = random ? [shape, seeded ? new td.Generator(11) : null] : [shape];
                td.manualSeed(4);
                let viaSchema: td.Tensor | Error;
                try {
                  viaSchema = td.op(schemaName, ...schemaArgs, { dtype, device: device ?? null }) as td.Tensor;
                } catch (error) {
                  viaSchema = error as Error;
                }
                td.manualSeed(4);
                const make = () => (td[factory as keyof typeof schemaNames] as (s: number[], o: object) => td.Tensor)(shape, seeded ? { ...options, generator: new td.Generator(11) } : options);
                if (viaSchema instanceof Error) {
                  expect(make, label).toThrow(viaSchema.message);
                  continue;
                }
                const unboxed = make();
                expect([unboxed.dtype, unboxed.shape, unboxed.device], label).toEqual([viaSchema.dtype, viaSchema.shape, viaSchema.device]);
                expect(td.op("aten::equal", unboxed, viaSchema), label).toBe(true);
              }
            }
          }
        }
      }
    });
  });

  it("draw from the given generator's state, so both paths continue one sequence", () => {
    const generator = new td.Generator(3);
    const small = td.tidy(() => [td.randn([4], { generator }), td.rand([4], { generator }), td.randn([70000], { generator }).narrow(0, 0, 4), td.randn([4], { generator })].map((t) => Array.from(t.toFloat64Array())));
    const reference = new td.Generator(3);
    const expected = td.tidy(() =>
      [["aten::randn.generator", [4]], ["aten::rand.generator", [4]], ["aten::randn.generator", [70000]], ["aten::randn.generator", [4]]].map(([name, shape]) =>
        Array.from((td.op(name as string, shape, reference) as td.Tensor).narrow(0, 0, 4).toFloat64Array()),
      ),
    );
    expect(small).toEqual(expected);
  });

  it("words a wrong generator the way the generic op does", () => {
    expect(() => td.randn([2], { generator: {} as td.Generator })).toThrow("generator");
    expect(() => td.rand([2], { generator: 5 as unknown as td.Generator })).toThrow("expected a Generator");
  });
});
