import { describe, expect, it } from "vitest";
import { Generator, defaultGenerator, manualSeed, rand, randint, randn, randnLike, zeros } from "../lib";
import { readFixture } from "./helpers";

interface RandomRefs {
  seed: number;
  sequence: { kind: string; shape: number[]; values: number[] }[];
  global_seed: number;
  global_randn4: number[];
}
const refs = readFixture<{ random: RandomRefs }>("bridge_refs.json").random;

describe("random numbers equal PyTorch's", () => {
  it("reproduces a seeded call sequence bit for bit", () => {
    const g = new Generator(refs.seed);
    for (const draw of refs.sequence) {
      const t =
        draw.kind === "randn" ? randn(draw.shape, { generator: g })
        : draw.kind === "rand" ? rand(draw.shape, { generator: g })
        : draw.kind === "randint" ? randint(0, 1000, draw.shape, { generator: g })
        : randn(draw.shape, { generator: g, dtype: "float64" });
      expect(Array.from(t.toFloat64Array())).toEqual(draw.values);
      t.dispose();
    }
  });

  it("seeds the global generator like torch.manual_seed", () => {
    manualSeed(refs.global_seed);
    expect(Array.from(randn([4]).toFloat64Array())).toEqual(refs.global_randn4);
  });

  it("restarts a sequence after manualSeed and restores saved state", () => {
    const g = new Generator(5);
    const first = randn([3], { generator: g }).toFloat32Array();
    g.manualSeed(5);
    const state = g.getState();
    const again = randn([3], { generator: g }).toFloat32Array();
    expect(again).toEqual(first);
    g.setState(state);
    expect(randn([3], { generator: g }).toFloat32Array()).toEqual(first);
    expect(g.seed).toBe(5);
  });

  it("randnLike draws with the tensor's shape and dtype", () => {
    const like = randnLike(zeros([2, 2], { dtype: "float64" }), { generator: new Generator(1) });
    expect(like.shape).toEqual([2, 2]);
    expect(like.dtype).toBe("float64");
    expect(defaultGenerator.device).toBe("cpu");
  });

  it("rejects bad seeds", () => {
    expect(() => new Generator(-1)).toThrow("Generator: expected a non-negative integer seed but received number -1");
    expect(() => manualSeed(1.5)).toThrow("manualSeed: expected a non-negative integer seed");
  });
});
