import { describe, expect, it } from "vitest";
import * as td from "../lib";

const live = () => td.memory().numTensors;

describe("tensor lifetimes", () => {
  it("dispose frees the handle, and using a disposed tensor throws", () => {
    const base = live();
    const t = td.zeros([4]);
    expect(live()).toBe(base + 1);
    t.dispose();
    t.dispose();
    expect(live()).toBe(base);
    expect(t.isDisposed).toBe(true);
    expect(() => t.shape).toThrow("Tensor.shape: the Tensor was already disposed");
    expect(() => t.add(1)).toThrow("aten::add.Scalar: argument 'self': the Tensor was already disposed");
    expect(String(t)).toBe("Tensor(disposed)");
  });

  it("Symbol.dispose frees a tensor at the end of a `using` block", () => {
    const base = live();
    {
      const t = td.ones([2]);
      (t as unknown as { [Symbol.dispose]: () => void })[(Symbol as unknown as { dispose: symbol }).dispose ?? Symbol.for("nodejs.dispose")]();
    }
    expect(live()).toBe(base);
  });

  it("tidy disposes intermediates and keeps results, arrays and objects of results", () => {
    const base = live();
    const x = td.ones([3]);
    const y = td.tidy(() => x.mul(2).add(1).exp());
    expect(live()).toBe(base + 2);
    const { a, list } = td.tidy(() => ({ a: x.add(1), list: [x.mul(3), x.sub(1)] }));
    expect(live()).toBe(base + 5);
    for (const t of [x, y, a, ...list]) t.dispose();
    expect(live()).toBe(base);
  });

  it("nested tidy moves results to the outer scope, and keep() exempts", () => {
    const base = live();
    let kept: td.Tensor | undefined;
    td.tidy(() => {
      const inner = td.tidy(() => td.ones([1]).add(1));
      kept = td.keep(inner.mul(5));
      return undefined;
    });
    expect(live()).toBe(base + 1);
    expect(kept!.item()).toBe(10);
    kept!.dispose();
    expect(live()).toBe(base);
  });

  it("tidy cleans up when the function throws", () => {
    const base = live();
    expect(() => td.tidy(() => {
      td.ones([2]);
      throw new Error("boom");
    })).toThrow("boom");
    expect(live()).toBe(base);
  });

  it("tidyAsync tracks tensors across awaits", async () => {
    const base = live();
    const result = await td.tidyAsync(async () => {
      const a = td.ones([2]);
      await new Promise((r) => setTimeout(r, 1));
      return a.add(td.ones([2]));
    });
    expect(live()).toBe(base + 1);
    expect(result.toArray()).toEqual([2, 2]);
    result.dispose();
    expect(live()).toBe(base);
  });

  it("reports storage bytes once per storage, views included", () => {
    const before = td.memory();
    const t = td.zeros([256], { dtype: "float32" });
    const view = t.view([16, 16]);
    const after = td.memory();
    expect(after.cpuBytes - before.cpuBytes).toBe(1024);
    expect(after.numStorages - before.numStorages).toBe(1);
    t.dispose();
    view.dispose();
    expect(td.memory().cpuBytes).toBeLessThanOrEqual(before.cpuBytes);
  });

  it("100k small ops inside tidy return live tensors, their bytes and the allocator's cache to baseline", () => {
    // Tensor memory, not RSS: RSS also moves with V8's heap and the machine's load, so it
    // cannot tell a leak from a busy machine. A leak shows here as live bytes or an ever
    // growing cache of freed blocks.
    const before = td.memory();
    const x = td.keep(td.randn([16], { generator: new td.Generator(0) }));
    const cacheBefore = td.cpuAllocatorStats().cachedBytes;
    let peakCache = 0;
    for (let round = 0; round < 100; round++) {
      td.tidy(() => {
        let y = x;
        for (let i = 0; i < 1000; i++) y = y.mul(0.999).add(0.001);
        return undefined;
      });
      peakCache = Math.max(peakCache, td.cpuAllocatorStats().cachedBytes);
    }
    const during = td.memory();
    // ≤, not =: a GC finalizer may free an earlier test's garbage meanwhile; a leak adds thousands.
    expect(during.numTensors).toBeLessThanOrEqual(before.numTensors + 1);
    expect(during.cpuBytes - before.cpuBytes).toBeLessThanOrEqual(64); // x itself: 16 float32
    // Each round frees 2,000 64-byte tensors into the cache and reuses them the next round.
    expect(peakCache - cacheBefore).toBeLessThan(1024 * 1024);
    x.dispose();
    expect(td.memory().cpuBytes).toBeLessThanOrEqual(before.cpuBytes);
  });

  it("reuses freed tensor memory instead of faulting in fresh pages (caching CPU allocator)", () => {
    const x = td.randn([2, 4, 64, 64]); // 128 KiB, the size of SD-ish latents
    const warm = () => td.tidy(() => {
      x.mul(0.5).add(1);
    });
    warm();
    const before = td.cpuAllocatorStats();
    const faultsBefore = process.resourceUsage().minorPageFault;
    for (let i = 0; i < 500; i++) warm();
    const faultsPerOp = (process.resourceUsage().minorPageFault - faultsBefore) / 1000;
    const after = td.cpuAllocatorStats();
    expect(after.hits - before.hits).toBeGreaterThanOrEqual(1000);
    expect(faultsPerOp).toBeLessThan(2); // without the cache: ~16 per op (fresh 4 KiB pages)
    td.emptyCpuCache();
    expect(td.cpuAllocatorStats().cachedBytes).toBe(0);
    x.dispose();
  });

  it("GC finalizers free handles nobody disposed", async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    expect(gc, "vitest.config.ts runs the tests with --expose-gc").toBeTypeOf("function");
    const base = live();
    for (let i = 0; i < 100; i++) td.zeros([8]);
    gc!();
    await new Promise((r) => setTimeout(r, 10));
    gc!();
    expect(live()).toBeLessThan(base + 100);
  });

  it("the late GC callback of a disposed tensor leaves the tensor that reused its slot alone", async () => {
    const gc = (globalThis as { gc?: () => void }).gc!;
    const settle = async () => {
      for (let i = 0; i < 2; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await settle(); // earlier tests' garbage first
    const base = live();
    // Disposed at once: their slots are free, their objects garbage whose callbacks are still due.
    for (let i = 0; i < 200; i++) td.zeros([4]).dispose();
    const kept = Array.from({ length: 200 }, (_, i) => td.full([4], i));
    await settle();
    expect(live()).toBe(base + 200);
    kept.forEach((t, i) => expect(t.toArray()).toEqual([i, i, i, i]));
    kept.forEach((t) => t.dispose());
    expect(live()).toBe(base);
  });
});
