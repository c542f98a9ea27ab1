/**
 * The CUDA paths, end to end through the addon: tensors, the fused attention op on every
 * path (TORCH_DIFFUSION_CUDA_ATTENTION, read per call), a built-in pipeline and fineTune.
 * Skipped where no CUDA device is visible (CI); run on a GPU machine with
 *   npx vitest run test/cuda.test.ts
 * Each comparison prints its measured error, so a failure says by how much.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import * as td from "../lib";
import type { Tensor } from "../lib";
import { fixtures, maxRelativeError, withEnv } from "./helpers";

const cuda = td.cuda.isAvailable();
const ATTENTION_PATHS = ["auto", "fused", "sdpa", "math"] as const;

const withAttentionPath = <T>(name: string, fn: () => T): T => withEnv({ TORCH_DIFFUSION_CUDA_ATTENTION: name }, fn);

const maxAbsDiff = (a: Tensor, b: Tensor) => td.tidy(() => a.to("cpu").float().sub(b.to("cpu").float()).abs().max().item());

describe.skipIf(!cuda)("on CUDA (skipped: no CUDA device)", () => {
  const g = new td.Generator(3);
  const rnd = (shape: number[]) => td.randn(shape, { generator: g });
  afterEach(() => td.cuda.synchronize());

  it("tensors round-trip and ops give the CPU's results", () => {
    const before = td.memory().numTensors;
    td.tidy(() => {
      const a = rnd([64, 96]);
      const b = rnd([96, 32]);
      const onGpu = a.to("cuda").matmul(b.to("cuda")).relu().add(1);
      expect(onGpu.device).toBe("cuda:0");
      const diff = maxAbsDiff(onGpu, a.matmul(b).relu().add(1));
      console.log(`matmul+relu+add cuda vs cpu: max |Δ| ${diff.toExponential(2)}`);
      expect(diff).toBeLessThan(1e-4);
      expect(Array.from(a.to("cuda").to("cpu").toFloat32Array())).toEqual(Array.from(a.toFloat32Array()));
      expect(a.to("cuda").half().to("cpu").float().sub(a).abs().max().item()).toBeLessThan(2e-3 * a.abs().max().item());
    });
    expect(td.memory().numTensors).toBe(before);
  });

  it.each(ATTENTION_PATHS)("attention path %s matches the float32 reference in float16, bfloat16 and float32", (name) => {
    td.tidy(() => {
      const cases: Array<[number[], number[], td.AttentionOptions]> = [
        [[2, 8, 1024, 40], [2, 8, 1024, 40], {}],
        [[2, 8, 1024, 40], [2, 8, 77, 40], {}],
        [[1, 4, 130, 80], [1, 4, 131, 80], { scale: 0.2 }],
        [[2, 4, 70, 160], [2, 4, 77, 160], { mask: td.arange(77).lt(50).reshape([1, 1, 1, 77]) }],
        [[1, 2, 65, 64], [1, 2, 33, 64], { mask: rnd([65, 33]) }],
      ];
      for (const [qShape, kShape, options] of cases) {
        const [q, k, v] = [rnd(qShape), rnd(kShape), rnd(kShape)];
        const cpuMask = options.mask && options.mask.dtype !== "bool" ? options.mask.float() : options.mask;
        const ref = td.naiveAttention(q, k, v, { ...options, mask: cpuMask }).toFloat32Array();
        for (const [dtype, tolerance] of [["float16", 4e-3], ["bfloat16", 3e-2], ["float32", 5e-3]] as const) {
          const toGpu = (t: Tensor) => t.to({ device: "cuda", dtype });
          const mask = options.mask ? options.mask.to({ device: "cuda" }) : undefined;
          const out = withAttentionPath(name, () => td.attention(toGpu(q), toGpu(k), toGpu(v), { ...options, mask }));
          expect([out.device, out.dtype, out.shape]).toEqual(["cuda:0", dtype, qShape]);
          const err = maxRelativeError(out.to("cpu").float().toFloat32Array(), ref);
          console.log(`attention ${name} ${dtype} q[${qShape}] k[${kShape}]${options.mask ? " masked" : ""}: ${err.toExponential(2)}`);
          expect(err, `${name} ${dtype} q[${qShape}]`).toBeLessThanOrEqual(tolerance);
        }
      }
    });
  });

  it.each(ATTENTION_PATHS)("attention path %s takes float16 views that start 2 bytes into their storage", (name) => {
    // libtorch 2.11's SDPA returned wrong values (or a misaligned-address fault) for such views.
    td.tidy(() => {
      const base = rnd([2 * 90 * 40 + 1]);
      const x = base.slice(0, 1).reshape([1, 2, 90, 40]);
      const ref = td.naiveAttention(x, x, x).toFloat32Array();
      const view = base.to({ device: "cuda", dtype: "float16" }).slice(0, 1).reshape([1, 2, 90, 40]);
      const out = withAttentionPath(name, () => td.attention(view, view, view));
      expect(maxRelativeError(out.to("cpu").float().toFloat32Array(), ref)).toBeLessThanOrEqual(4e-3);
    });
  });

  it("attention gradients on CUDA equal the CPU's", () => {
    td.tidy(() => {
      const [q0, k0, v0, up] = [rnd([1, 2, 40, 64]), rnd([1, 2, 24, 64]), rnd([1, 2, 24, 64]), rnd([1, 2, 40, 64])];
      const grads = (device: string) => {
        const [q, k, v] = [q0, k0, v0].map((t) => t.to(device).requiresGrad_());
        td.attention(q, k, v).mul(up.to(device)).sum().backward();
        return [q, k, v].map((t) => t.grad!.to("cpu").toFloat32Array());
      };
      const [gpu, cpu] = [grads("cuda"), grads("cpu")];
      gpu.forEach((grad, i) => expect(maxRelativeError(grad, cpu[i])).toBeLessThanOrEqual(1e-4));
    });
  });

  it("the built-in model draws the CPU's images from the same seed", async () => {
    const builtin = td.builtinModelPath();
    const run = async (device: string) => {
      const pipe = td.Text2ImagePipeline.fromPretrained(builtin, { device });
      const { images } = await pipe.generate({ prompt: ["a photo of a sneaker", "a photo of a bag"], guidanceScale: 2, numInferenceSteps: 20, generator: new td.Generator(5) });
      pipe.model.dispose();
      return images;
    };
    const [gpu, cpu] = [await run("cuda"), await run("cpu")];
    const maxDiff = maxAbsDiff(gpu, cpu);
    const meanDiff = td.tidy(() => gpu.to("cpu").sub(cpu).abs().mean().item());
    console.log(`builtin 20 steps cuda vs cpu: max |Δ| ${maxDiff.toExponential(2)}, mean |Δ| ${meanDiff.toExponential(2)} (images in [0, 1])`);
    expect(meanDiff).toBeLessThan(5e-3);
    expect(maxDiff).toBeLessThan(0.1);
    gpu.dispose();
    cpu.dispose();
  });

  it("fineTune trains on CUDA with the CPU's losses and writes a model that loads back", async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-cuda-"));
    const images = td.keep(td.tidy(() => td.rand([8, 3, 16, 16], { generator: new td.Generator(2) }).mul(2).sub(1)));
    const dataset = td.tensorDataset(images, { captions: Array.from({ length: 8 }, (_, i) => `a photo of thing ${i}`) });
    const tiny = path.join(fixtures, "models", "tiny-sd");
    const train = async (device: string) => {
      const model = td.loadModel(tiny, { device });
      const result = await td.fineTune(model, dataset, { out: path.join(tmp, device), steps: 4, batchSize: 2, lr: 1e-3, checkpointEvery: 2 });
      model.dispose();
      return result;
    };
    const [gpu, cpu] = [await train("cuda"), await train("cpu")];
    console.log(`fineTune losses cuda ${gpu.losses.map((l) => l.toFixed(6))} cpu ${cpu.losses.map((l) => l.toFixed(6))}`);
    expect(gpu.losses).toHaveLength(4);
    gpu.losses.forEach((loss, i) => expect(Math.abs(loss - cpu.losses[i]) / cpu.losses[i], `step ${i + 1}`).toBeLessThan(1e-2));
    const reloaded = td.loadModel(path.join(tmp, "cuda"), { device: "cuda" });
    expect(reloaded.unet!.device).toBe("cuda:0");
    reloaded.dispose();
    images.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
});
