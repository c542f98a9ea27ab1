import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { runCli } from "./helpers/cli";
import { settledTensorCount } from "./helpers/training";

const builtin = path.join(__dirname, "..", "models", "builtin");
const model = td.loadModel(builtin);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-imagic-"));
// A real Fashion-MNIST test image (a shirt-like class) as the model sees it: (1, 1, 32, 32) in [0, 1].
const fashion = new td.FashionMNIST({ split: "test", pad32: true });
const index = Array.from({ length: 50 }, (_, i) => i).find((i) => fashion.get(i).label === 6)!; // "shirt"
const image = td.keep(td.tidy(() => fashion.get(index).image.unsqueeze(0).add(1).div(2)));
const small = { model, image, targetPrompt: "a photo of a dress", embeddingSteps: 12, fineTuneSteps: 6, fineTuneLr: 1e-4, seed: 3 };
const values = (t: td.Tensor) => Array.from(t.toFloat32Array());
/** The denoising loss of an embedding on the image over 32 fixed (noise, timestep) draws: stage 1's objective without its sampling noise. */
async function reconstructionLoss(embedding: td.Tensor): Promise<number> {
  const objective = td.trainingObjective(model.schedulerConfig!);
  const x0 = await model.imagesToLatents(image);
  return td.tidy(() => {
    const g = new td.Generator(99);
    const batch = td.cat(Array(32).fill(x0), 0);
    const times = { discrete: Array.from({ length: 32 }, (_, i) => 15 + i * 30) };
    const { noisy, target, modelTimesteps } = td.noisedBatch(objective.objective, batch, td.randn(batch.shape, { generator: g }), times, { alphasCumprod: td.alphasCumprodFor(objective.noiseSchedule) });
    const context = td.cat(Array(32).fill(embedding), 0);
    return td.noGrad(() => td.mseLoss(model.predictSync({ sample: noisy, timestep: modelTimesteps, encoderHiddenStates: context }), target).item());
  });
}
const unetWeights = (m: td.DiffusionModel) => td.tidy(() => Object.fromEntries(Object.entries(m.unet!.namedParameters()).map(([k, v]) => [k, values(v)])));

describe("Imagic", () => {
  it("stage 1 lowers the reconstruction loss and leaves the model untouched; stage 2 trains a copy, not the embedding", async () => {
    const before = unetWeights(model);
    const losses: Record<string, number[]> = { embedding: [], fineTune: [] };
    const result = await td.imagic({ ...small, embeddingSteps: 30, embeddingLr: 1e-2, onProgress: ({ stage, loss }) => losses[stage].push(loss) });
    expect(losses.embedding).toHaveLength(30);
    expect(losses.fineTune).toHaveLength(6);
    expect(await reconstructionLoss(result.embedding)).toBeLessThan(0.97 * (await reconstructionLoss(result.targetEmbedding))); // measured: 0.124 vs 0.131
    // The loaded model: same weights, no gradients, still requiring grad as loaded.
    expect(unetWeights(model)).toEqual(before);
    for (const p of model.unet!.parameters()) {
      expect(p.grad).toBeNull();
      expect(p.requiresGrad).toBe(true);
      p.dispose();
    }
    // The fine-tuned copy moved; the embedding is what stage 1 left (stage 2 reads it only).
    const tuned = unetWeights(result.model);
    expect(Object.keys(tuned).some((k) => tuned[k].some((v, i) => v !== before[k][i]))).toBe(true);
    const stage1Only = await td.imagic({ ...small, embeddingSteps: 30, embeddingLr: 1e-2, fineTuneSteps: 0 });
    expect(values(result.embedding)).toEqual(values(stage1Only.embedding));
    expect(values(result.targetEmbedding)).toEqual(values(await model.encodePrompt(["a photo of a dress"])));
    expect(values(result.embedding)).not.toEqual(values(result.targetEmbedding));
    // ē at η = 0 and 1 are the two embeddings.
    expect(values(result.interpolate(0))).toEqual(values(result.embedding));
    expect(values(result.interpolate(1))).toEqual(values(result.targetEmbedding));
    const { images } = await result.generate({ eta: 0.7, numInferenceSteps: 3, guidanceScale: 2, generator: new td.Generator(0) });
    expect(images.shape).toEqual([1, 1, 32, 32]);
    result.dispose();
    stage1Only.dispose();
  });

  it("is deterministic, resumes an aborted run to the same weights, reuses finished stages, and leaks nothing", async () => {
    const reference = await td.imagic({ ...small, dir: path.join(tmp, "whole") });
    const expected = unetWeights(reference.model);
    const expectedEmbedding = values(reference.embedding);
    reference.dispose();
    const baseline = await settledTensorCount();
    const dir = path.join(tmp, "resumed");
    const controller = new AbortController();
    const aborted = td.imagic({ ...small, dir, checkpointEvery: 2, signal: controller.signal, onProgress: ({ stage, step }) => stage === "fineTune" && step === 3 && controller.abort() });
    await expect(aborted).rejects.toThrow("The operation was aborted");
    expect(fs.readdirSync(path.join(dir, "checkpoints")).filter((f) => f.endsWith(".pt"))).toEqual(["checkpoint-00000002.pt", "checkpoint-00000003.pt"]);
    expect(await settledTensorCount()).toBe(baseline);
    const steps: string[] = [];
    const resumed = await td.imagic({ ...small, dir, onProgress: ({ stage, step }) => steps.push(`${stage}${step}`) });
    expect(steps).toEqual(["fineTune4", "fineTune5", "fineTune6"]); // stage 1 reused, stage 2 resumed
    expect(unetWeights(resumed.model)).toEqual(expected);
    expect(values(resumed.embedding)).toEqual(expectedEmbedding);
    const reused: string[] = [];
    const again = await td.imagic({ ...small, dir, onProgress: ({ stage }) => reused.push(stage) });
    expect(reused).toEqual([]);
    expect(unetWeights(again.model)).toEqual(expected);
    for (const r of [resumed, again]) r.dispose();
    expect(await settledTensorCount()).toBe(baseline);
  });

  it("torch-diffusion imagic: trains once per --out folder, then writes one image per η", async () => {
    const input = path.join(tmp, "shirt.png");
    await td.writeImage(image.index(0), input);
    const out = path.join(tmp, "cli");
    const run = (...extra: string[]) =>
      runCli(["imagic", "--image", input, "--prompt", "a photo of a dress", "--out", out, "--embedding-steps", "4", "--embedding-lr", "0.1", "--train-steps", "3", "--lr", "2e-5", "--steps", "2", "--guidance", "2", ...extra]);
    const first = await run("--eta", "0.6");
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe(`${path.join(out, "eta-0.60.png")}\n`);
    expect(fs.readdirSync(out).sort()).toEqual(["checkpoints", "embeddings.pt", "eta-0.60.png", "imagic.json", "unet.pt"]);
    const written = fs.statSync(path.join(out, "unet.pt")).mtimeMs;
    const sweep = await run("--sweep");
    expect(sweep.stdout.trim().split("\n").map((f) => path.basename(f))).toEqual(["eta-0.60.png", "eta-0.65.png", "eta-0.70.png", "eta-0.75.png", "eta-0.80.png"]);
    expect(fs.statSync(path.join(out, "unet.pt")).mtimeMs).toBe(written); // stages reused, not rerun
    expect(fs.readFileSync(path.join(out, "eta-0.60.png")).length).toBeGreaterThan(0);
    expect(await run("--eta", "0.5", "--sweep")).toMatchObject({ code: 1, stderr: "torch-diffusion: --eta and --sweep: give one\n" });
  });

  it("validates its options", async () => {
    await expect(td.imagic({ ...small, targetPrompt: 3 as unknown as string })).rejects.toThrow("Expected string for imagic targetPrompt but received 3 of type number");
    await expect(td.imagic({ ...small, embeddingLr: -1 })).rejects.toThrow("Expected non-negative number for imagic embeddingLr but received -1 of type number");
    await expect(td.imagic({ ...small, model: {} as td.DiffusionModel })).rejects.toThrow("Expected DiffusionModel (from loadModel) for imagic model but received Object");
    await expect(td.imagic({ ...small, image: td.rand([1, 3, 32, 32]) })).rejects.toThrow("imagic image: the model works on 1-channel images but the image has 3 channels");
  });
});
