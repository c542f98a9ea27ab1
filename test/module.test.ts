import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { expectClose, fixtures, fromEncoded, maxRelativeError, readFixture, withBatchPieces, type EncodedTensor } from "./helpers";

const refs = readFixture<{ modules: Record<string, EncodedTensor> }>("bridge_refs.json").modules;
const echoPath = path.join(fixtures, "modules", "echo.pt");
const convPath = path.join(fixtures, "modules", "tiny_conv.pt");

describe("TorchScript modules", () => {
  it("converts every argument and result kind both ways", async () => {
    const echo = td.load(echoPath);
    const x = td.tensor([1, 2]);
    const [y, dict, sizes, name, isNone] = (await echo.forward(x, 0.5, true, "hi", [td.ones([2]), td.ones([2])], { k: td.tensor([3, 4]) })) as [Tensor, Record<string, Tensor>, number[], string, boolean];
    expect(y.toArray()).toEqual([-1.5, -2.5]);
    expect(Object.keys(dict).sort()).toEqual(["k", "total"]);
    expect(dict.total.toArray()).toEqual([2, 2]);
    expect(dict.k.toArray()).toEqual([6, 8]);
    expect(sizes).toEqual([2, 2]);
    expect(name).toBe("hi!");
    expect(isNone).toBe(true);
    const withOptional = echo.forwardSync(x, 1, false, "", [], {}, td.tensor([5, 5])) as [Tensor, Record<string, Tensor>, number[], string, boolean];
    expect(withOptional[1].total.toArray()).toEqual([5, 5]);
    expect(withOptional[4]).toBe(false);
    expect((await echo.callMethod("double", [x]) as Tensor).toArray()).toEqual([2, 4]);
    expect(echo.methodNames()).toEqual(expect.arrayContaining(["forward", "double"]));
  });

  it("runs forward equal to PyTorch, sync and async", async () => {
    const conv = td.load(convPath);
    const x = fromEncoded(refs.x);
    expectClose(conv.forwardSync(x) as Tensor, refs.y, 1e-6);
    expectClose((await conv.forward(x)) as Tensor, refs.y, 1e-6);
  });

  it("8 concurrent async forwards give the right answers", async () => {
    const conv = td.load(convPath);
    const inputs = Array.from({ length: 8 }, (_, i) => fromEncoded(refs.x).mul(i + 1));
    const expected = inputs.map((x) => conv.forwardSync(x) as Tensor);
    const results = (await Promise.all(inputs.map((x) => conv.forward(x)))) as Tensor[];
    results.forEach((r, i) => expect(Array.from(r.toFloat32Array())).toEqual(Array.from(expected[i].toFloat32Array())));
  });

  it("callMethodConcurrently runs one call per argument list at once, equal to separate calls", async () => {
    const conv = td.load(convPath);
    const before = td.memory().numTensors;
    await td.tidyAsync(async () => {
      const inputs = [1, 2, 3].map((i) => fromEncoded(refs.x).mul(i));
      const expected = inputs.map((x) => conv.forwardSync(x) as Tensor);
      for (const threads of [1, 2]) {
        const results = (await withBatchPieces(threads, 1, () => conv.callMethodConcurrently("forward", inputs.map((x) => [x])))) as Tensor[];
        results.forEach((r, i) => expect(maxRelativeError(r.toFloat32Array(), expected[i].toFloat32Array()), `${threads} threads`).toBeLessThan(1e-6));
      }
      // a failing piece rejects the whole call, after every piece has finished, and names the method
      await expect(conv.callMethodConcurrently("forward", [[inputs[0]], [td.zeros([1, 3, 4, 4])]])).rejects.toThrow(/^Module\.forward: .*channels/);
      // malformed calls throw before anything is queued, as callMethod's do
      expect(() => conv.callMethodConcurrently("forward", [])).toThrow("Module.runConcurrentlyAsync: expected a non-empty array of argument arrays but received array");
      expect(() => conv.callMethodConcurrently("forward", [inputs[0]] as never)).toThrow("Module.forward: expected the arguments as an array but received");
      expect(() => conv.callMethodConcurrently("nope", [[inputs[0]]])).toThrow('Module.nope: the module has no method "nope"');
      expect(() => conv.callMethodConcurrently(7 as never, [[inputs[0]]])).toThrow("Module.runConcurrentlyAsync: method name");
    });
    expect(td.memory().numTensors).toBe(before);
  });

  it("honours noGrad inside async work", async () => {
    const conv = td.load(convPath);
    conv.train();
    const x = fromEncoded(refs.x);
    expect(((await conv.forward(x)) as Tensor).requiresGrad).toBe(true);
    const y = await td.noGradAsync(() => conv.forward(x) as Promise<Tensor>);
    expect(y.requiresGrad).toBe(false);
  });

  it("exposes parameters and buffers, train/eval, to(), clone", () => {
    const conv = td.load(convPath);
    const names = Object.keys(conv.namedParameters());
    expect(names).toEqual(["conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"]);
    expect(conv.parameters()[0].shape).toEqual([8, 4, 3, 3]);
    expect(conv.training).toBe(false);
    expect(conv.train().training).toBe(true);
    expect(Object.keys(td.load(echoPath).namedBuffers())).toEqual(["offset"]);
    const half = td.load(convPath, { dtype: "float64" });
    expect(half.parameters()[0].dtype).toBe("float64");
    const copy = conv.copy();
    copy.parameters()[0].detach().zero_();
    expect(conv.parameters()[0].abs().sum().item()).toBeGreaterThan(0);
  });

  it("setParameter widens a conv (InstructPix2Pix) and the module uses it", () => {
    const conv = td.load(convPath);
    const old = conv.namedParameters()["conv_in.weight"];
    const wide = td.cat([old, td.zeros([8, 4, 3, 3])], 1);
    conv.setParameter("conv_in.weight", wide);
    expect(conv.namedParameters()["conv_in.weight"].shape).toEqual([8, 8, 3, 3]);
    expectClose(conv.forwardSync(fromEncoded(refs.x8)) as Tensor, refs.y8, 1e-6);
    expect(() => conv.setParameter("nope.weight", wide)).toThrow('Module.setParameter: "nope.weight" has no submodule "nope"');
  });

  it("saves to a file and a Buffer and loads either back", () => {
    const conv = td.load(convPath);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "td-")), "m.pt");
    conv.save(file);
    const x = fromEncoded(refs.x);
    expectClose(td.load(file).forwardSync(x) as Tensor, refs.y, 1e-6);
    expectClose(td.load(conv.saveToBuffer()).forwardSync(x) as Tensor, refs.y, 1e-6);
  });

  it("gives clear errors for missing, truncated and non-TorchScript files", () => {
    expect(() => td.load("/nonexistent/model.pt")).toThrow('load("/nonexistent/model.pt"): no such file or it cannot be read');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-"));
    const truncated = path.join(dir, "truncated.pt");
    fs.writeFileSync(truncated, fs.readFileSync(convPath).subarray(0, 2000));
    expect(() => td.load(truncated)).toThrow(/load\(".*truncated.pt"\): not a TorchScript file or truncated/);
    const text = path.join(dir, "text.pt");
    fs.writeFileSync(text, "hello");
    expect(() => td.load(text)).toThrow(/not a TorchScript file or truncated/);
    expect(() => td.load(Buffer.from("nope"))).toThrow(/load\(<Buffer of 4 bytes>\): not a TorchScript archive or truncated/);
    expect(() => td.load(42 as unknown as string)).toThrow("Expected file path or Buffer for load source but received 42 of type number");
  });

  it("gives clear errors for bad calls", async () => {
    const echo = td.load(echoPath);
    expect(() => echo.forwardSync(td.ones([1]))).toThrow(/Module.forward: .*factor/);
    expect(() => echo.forwardSync("x", 1, true, "", [], {})).toThrow("Module.forward: argument 'x': expected a Tensor but received string \"x\"");
    expect(() => echo.forwardSync(td.ones([1]), 1, 1, "", [], {})).toThrow("Module.forward: argument 'flag': expected a boolean but received number 1");
    expect(() => echo.callMethodSync("nope")).toThrow('Module.nope: the module has no method "nope" (methods: ');
    const conv = td.load(convPath);
    await expect(conv.forward(td.ones([1, 3, 4, 4]))).rejects.toThrow(/Module.forward: .*expected input\[1, 3, 4, 4\] to have 4 channels/);
  });
});

describe("graph-executor optimization", () => {
  /** Gradients of a U-Net's parameters for one fixed input, through a sync or an async call. */
  async function gradients(module: td.Module, async: boolean): Promise<number[][]> {
    return td.tidyAsync(async () => {
      const g = new td.Generator(0);
      const args = [td.randn([2, 4, 8, 8], { generator: g }), td.tensor([10, 500], undefined, { dtype: "int64" }), td.randn([2, 7, 16], { generator: g })];
      const out = (async ? await module.forward(...args) : module.forwardSync(...args)) as Tensor;
      out.square().mean().backward();
      const params = module.parameters();
      const grads = params.map((p) => Array.from(p.grad!.toFloat32Array()));
      for (const p of params) p.grad = null;
      return grads;
    });
  }

  it("is off by default for calls that record gradients: first and later calls give bit-identical gradients, sync and async", async () => {
    expect(td.isGraphOptimizationEnabled()).toBe("inference");
    const unet = td.load(path.join(fixtures, "models", "tiny-sd", "unet", "model.pt"));
    const first = await gradients(unet, false);
    for (const async of [false, true, false, true]) expect(await gradients(unet, async)).toEqual(first);
  });

  it("leaves no-grad calls bit-identical from the first call on, optimized or not", async () => {
    const unet = td.load(path.join(fixtures, "models", "tiny-sd", "unet", "model.pt"));
    const g = new td.Generator(0);
    const args = [td.randn([2, 4, 16, 16], { generator: g }), td.tensor([500], undefined, { dtype: "int64" }), td.randn([2, 77, 16], { generator: g })];
    const run = async (async: boolean) => td.tidyAsync(async () => Array.from((await td.noGradAsync(async () => (async ? await unet.forward(...args) : unet.forwardSync(...args)) as Tensor)).toFloat32Array()));
    const first = await run(false);
    for (const async of [true, false, true, false]) expect(await run(async)).toEqual(first);
    td.setGraphOptimization(false);
    try {
      expect(await run(false)).toEqual(first);
    } finally {
      td.setGraphOptimization("inference");
    }
    for (const a of args) a.dispose();
    unet.dispose();
  });

  it("can be switched on, off and back to inference only", () => {
    td.setGraphOptimization(true);
    expect(td.isGraphOptimizationEnabled()).toBe(true);
    td.setGraphOptimization(false);
    expect(td.isGraphOptimizationEnabled()).toBe(false);
    td.setGraphOptimization("inference");
    expect(td.isGraphOptimizationEnabled()).toBe("inference");
    expect(() => td.setGraphOptimization("yes" as unknown as boolean)).toThrow('Expected boolean or "inference" for setGraphOptimization(mode) but received "yes" of type string');
  });
});

describe("Module.dispose", () => {
  it("frees the parameters at once (back to the CPU cache), lets a call in flight finish, then throws", async () => {
    const unet = td.load(path.join(__dirname, "..", "models", "builtin", "unet", "model.pt"));
    // Blocks of 64 KiB and more go back to the caching allocator when freed: count those.
    const large = td.tidy(() => unet.parameters().map((p) => p.numel * 4).filter((bytes) => bytes >= 64 * 1024).reduce((a, b) => a + b, 0));
    expect(large).toBeGreaterThan(1e6);
    const args = [td.randn([1, 1, 32, 32]), td.tensor([10], undefined, { dtype: "int64" }), td.randn([1, 8, 64])];
    const inFlight = unet.forward(...args);
    unet.dispose();
    expect(unet.isDisposed).toBe(true);
    const out = (await inFlight) as Tensor;
    expect(out.shape).toEqual([1, 1, 32, 32]);
    out.dispose();
    for (const a of args) a.dispose();
    const cached = td.cpuAllocatorStats().cachedBytes;
    td.emptyCpuCache();
    expect(cached).toBeGreaterThanOrEqual(large); // the call's reference was the last one: freed when it settled
    expect(() => unet.forwardSync()).toThrow("Module: used after dispose()");
    expect(() => unet.namedParameters()).toThrow("Module: used after dispose()");
    expect(() => unet.save(path.join(os.tmpdir(), "x.pt"))).toThrow("Module: used after dispose()");
    expect(() => unet.dispose()).not.toThrow();
  });
});

describe("async call errors", () => {
  it("carry the caller's stack, not the worker's", async () => {
    const conv = td.load(convPath);
    const error = await conv.forward(td.zeros([1, 1, 2, 2])).then(() => null, (e: Error) => e);
    expect(error?.message).toMatch(/^Module\.forward: /);
    expect(error?.stack).toContain("module.test.ts");
  });
});

describe("worker threads", () => {
  it("a worker terminated with async calls in flight takes nothing down; the main thread's calls go on", () => {
    const child = spawnSync(process.execPath, ["--import", "tsx", path.join(__dirname, "helpers", "worker-terminate.ts")], { encoding: "utf8", timeout: 120_000 });
    expect(child.stderr).toBe("");
    expect(child.status).toBe(0);
    expect(child.stdout.trim().split("\n")).toEqual([
      "worker result 4x1x32x32", "round 0: terminated with calls in flight",
      "worker result 4x1x32x32", "round 1: terminated with calls in flight",
      "main result 4x1x32x32",
    ]);
  });
});
