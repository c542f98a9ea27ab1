import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { main } from "../lib/cli";
import { fixtures } from "./helpers";
import { settledTensorCount } from "./helpers/training";

const tinySd = path.join(fixtures, "models", "tiny-sd"); // latent: VAE, 3-channel 16×16 images
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-dreambooth-"));
const bytes = (t: td.Tensor) => Buffer.from(t.toFloat32Array().buffer);
const idOf = (tok: td.CLIPTokenizer, word: string) => tok.encode(word, { padding: "none" }).inputIds[0].slice(1, -1);

describe("DreamBooth identifier", () => {
  const clip = td.CLIPTokenizer.fromBuiltin(); // Stable Diffusion's CLIP vocabulary

  it("draws from the latest fifth of the BPE merges: 1-3 letters or digits that map back to the same single id", () => {
    const [lo, hi] = td.rareTokenRange(clip);
    expect([lo, hi]).toEqual([512 + Math.floor(0.8 * 48894), 49406]);
    expect(idOf(clip, "sks")).toEqual([48136]); // diffusers' example identifier lies in the range
    const candidates = td.rareTokenCandidates(clip);
    expect(candidates.length).toBeGreaterThan(300);
    expect(candidates.map((c) => c.text)).toContain("sks");
    for (const { id, text } of candidates) {
      expect(id >= lo && id < hi).toBe(true);
      expect(text).toMatch(/^[a-z0-9]{1,3}$/);
      expect(clip.decode([id])).toBe(text);
      expect(idOf(clip, text)).toEqual([id]);
    }
    // The filter is complete: every id of the range that passes the checks is a candidate.
    const ids = new Set(candidates.map((c) => c.id));
    for (let id = lo; id < hi; id += 97) {
      const text = clip.decode([id]);
      expect(ids.has(id), `${id} ${text}`).toBe(/^[a-z0-9]{1,3}$/.test(text) && idOf(clip, text).join() === String(id));
    }
  });

  it("is a uniform draw reproducible by seed, and makes single-token prompts", () => {
    const candidates = td.rareTokenCandidates(clip);
    const first = td.rareTokenIdentifier(clip, { seed: 7 });
    expect(td.rareTokenIdentifier(clip, { seed: 7 })).toEqual(first);
    const order = td.tidy(() => Array.from(td.randperm(candidates.length, { generator: new td.Generator(7) }).toFloat64Array()));
    expect(first).toEqual({ identifier: candidates[order[0]].text, tokenIds: [candidates[order[0]].id] });
    const drawn = new Set(Array.from({ length: 20 }, (_, seed) => td.rareTokenIdentifier(clip, { seed }).identifier));
    expect(drawn.size).toBeGreaterThan(15);
    const three = td.rareTokenIdentifier(clip, { seed: 1, count: 3 });
    expect(new Set(three.tokenIds).size).toBe(3);
    const ids = clip.encode(`a ${three.identifier} sneaker`, { padding: "none" }).inputIds[0];
    expect(ids).toEqual([clip.bosTokenId, ...idOf(clip, "a"), ...three.tokenIds, ...idOf(clip, "sneaker"), clip.eosTokenId]);
    // The built-in model's own 4,096-token vocabulary has candidates too.
    const builtin = td.loadModel(path.join(__dirname, "..", "models", "builtin")).tokenizer!;
    expect(td.rareTokenRange(builtin)).toEqual([512 + Math.floor(0.8 * 3582), 4094]);
    expect(td.rareTokenCandidates(builtin).length).toBeGreaterThan(50);
  });
});

/** n (C, H, W) images, image i filled with `values[i]`. */
function constantImages(values: number[], shape = [3, 16, 16]): td.Dataset {
  return td.tensorDataset(td.keep(td.tidy(() => td.stack(values.map((v) => td.full(shape, v))))));
}
const meanOf = (t: td.Tensor) => Math.round(td.tidy(() => t.mean().item()) * 100) / 100;

describe("DreamBooth data and loss", () => {
  const instanceValues = [0.1, 0.2, 0.3];
  const classValues = [-0.1, -0.2, -0.3, -0.4, -0.5];

  it("batches B instance examples then B class examples, pairing example i with instance i mod 3 and class i mod 5 in a seeded order", async () => {
    const data = td.dreamBoothDataset(constantImages(instanceValues), constantImages(classValues), {
      instancePrompt: "a sks thing", classPrompt: "a thing", batchSize: 2, batches: 6, size: 16, channels: 3, seed: 4, centerCrop: true,
    });
    expect(data.length).toBe(24);
    const perm = (epoch: number) => td.tidy(() => Array.from(td.randperm(5, { generator: new td.Generator(4 + epoch) }).toFloat64Array()));
    for (let b = 0; b < 6; b++) {
      for (let slot = 0; slot < 4; slot++) {
        const s = await data.get(b * 4 + slot);
        const q = b * 2 + (slot % 2);
        const i = perm(Math.floor(q / 5))[q % 5];
        const isClass = slot >= 2;
        expect([s.label, s.caption, meanOf(s.image)]).toEqual(isClass ? [td.DREAMBOOTH_CLASS, "a thing", classValues[i % 5]] : [td.DREAMBOOTH_INSTANCE, "a sks thing", instanceValues[i % 3]]);
        s.image.dispose();
      }
    }
    // Without class images: batches of instance examples only.
    const alone = td.dreamBoothDataset(constantImages(instanceValues), null, { instancePrompt: "a sks thing", batchSize: 3, batches: 2, size: 16, channels: 3 });
    const firstEpoch = await Promise.all([0, 1, 2].map((j) => alone.get(j)));
    expect(firstEpoch.map((s) => meanOf(s.image)).sort()).toEqual(instanceValues); // each instance once per epoch
    firstEpoch.forEach((s) => s.image.dispose());
  });

  it("resizes the shorter side and crops (seeded random or center), flips when asked, converts channels; each index is always the same example", async () => {
    const gradient = td.keep(td.tidy(() => td.arange(32).reshape([1, 1, 32]).expand([1, 16, 32]).div(31).mul(2).sub(1).contiguous())); // (1, 16, 32), left to right -1..1
    const wide = td.tensorDataset(gradient.unsqueeze(0));
    const options = { instancePrompt: "x", batchSize: 1, batches: 16, size: 16, channels: 3 };
    const random = td.dreamBoothDataset(wide, null, options);
    const centered = td.dreamBoothDataset(wide, null, { ...options, centerCrop: true });
    const flipped = td.dreamBoothDataset(wide, null, { ...options, centerCrop: true, randomFlip: true });
    const lefts = new Set<number>();
    let flips = 0;
    for (let j = 0; j < 16; j++) {
      const [a, again, c, f] = [await random.get(j), await random.get(j), await centered.get(j), await flipped.get(j)];
      expect(a.image.shape).toEqual([3, 16, 16]); // gray -> RGB
      expect(bytes(again.image)).toEqual(bytes(a.image));
      lefts.add(Math.round(td.tidy(() => a.image.index(0).index(0).index(0).item()) * 31));
      expect(Math.abs(meanOf(c.image))).toBe(0); // the middle 16 of 32 columns
      const firstColumn = td.tidy(() => f.image.index(0).index(0).index(0).item());
      if (firstColumn > 0) flips += 1;
      for (const s of [a, again, c, f]) s.image.dispose();
    }
    expect(lefts.size).toBeGreaterThan(4); // random crops move
    expect(flips).toBeGreaterThan(2);
    expect(flips).toBeLessThan(14);
    gradient.dispose();
  });

  it("priorPreservationLoss is L_instance + λ·L_prior on a fixed batch", () => {
    td.tidy(() => {
      const g = new td.Generator(0);
      const pred = td.randn([4, 4, 8, 8], { generator: g });
      const target = td.randn([4, 4, 8, 8], { generator: g });
      const batch = { images: pred, indices: [0, 1, 2, 3], labels: [0, 0, 1, 1], cond: undefined, drop: [false, false, false, false] };
      const instance = td.mseLoss(pred.narrow(0, 0, 2), target.narrow(0, 0, 2)).item();
      const prior = td.mseLoss(pred.narrow(0, 2, 2), target.narrow(0, 2, 2)).item();
      for (const lambda of [1, 0.5, 0]) expect(td.priorPreservationLoss(lambda)(pred, target, batch).item()).toBeCloseTo(instance + lambda * prior, 6);
      // Told apart by label, not by position; the generic MSE is the halves' mean instead.
      const swapped = { ...batch, labels: [1, 1, 0, 0] };
      expect(td.priorPreservationLoss(0.5)(pred, target, swapped).item()).toBeCloseTo(prior + 0.5 * instance, 6);
      expect(td.mseLoss(pred, target).item()).toBeCloseTo((instance + prior) / 2, 6);
    });
  });

  it("normalized by the global batch, the ranks' losses of a data-parallel step average to the one-process loss", () => {
    td.tidy(() => {
      // B = 3 subject + 3 class examples over W = 2 ranks: rank 0 takes positions 0, 2, 4 (2 subject, 1 class), rank 1 the rest.
      const g = new td.Generator(1);
      const pred = td.randn([6, 4, 8, 8], { generator: g });
      const target = td.randn([6, 4, 8, 8], { generator: g });
      const labels = [0, 0, 0, 1, 1, 1];
      const batchOf = (rows: number[]) => ({ images: pred, indices: rows, labels: rows.map((r) => labels[r]), cond: undefined, drop: rows.map(() => false), dropDraws: rows.map(() => 1) });
      const rowsOf = (t: td.Tensor, rows: number[]) => td.cat(rows.map((r) => t.narrow(0, r, 1)));
      const whole = td.priorPreservationLoss(0.5)(pred, target, batchOf([0, 1, 2, 3, 4, 5])).item();
      const shares = [[0, 2, 4], [1, 3, 5]].map((rows) => td.priorPreservationLoss(0.5, { perHalf: 3, worldSize: 2 })(rowsOf(pred, rows), rowsOf(target, rows), batchOf(rows)).item());
      expect((shares[0] + shares[1]) / 2).toBeCloseTo(whole, 6);
      // Each rank's own halves' means would not: rank 0's one class example would weigh as much as rank 1's two.
      const local = [[0, 2, 4], [1, 3, 5]].map((rows) => td.priorPreservationLoss(0.5)(rowsOf(pred, rows), rowsOf(target, rows), batchOf(rows)).item());
      expect(Math.abs((local[0] + local[1]) / 2 - whole)).toBeGreaterThan(1e-3);
      // One process: the same as without the options.
      expect(td.priorPreservationLoss(0.5, { perHalf: 3, worldSize: 1 })(pred, target, batchOf([0, 1, 2, 3, 4, 5])).item()).toBe(whole);
    });
  });

  it("the Trainer's step loss with it equals L_instance + λ·L_prior of the same draws", async () => {
    const model = td.loadModel(tinySd);
    const latents = (values: number[]) => constantImages(values, [4, 8, 8]);
    const data = td.dreamBoothDataset(latents(instanceValues), latents(classValues), { instancePrompt: "a sks thing", classPrompt: "a thing", batchSize: 2, batches: 1, size: 8, channels: 4 });
    const embeddings = { "a sks thing": td.keep(await model.encodePrompt(["a sks thing"])), "a thing": td.keep(await model.encodePrompt(["a thing"])) };
    const condition = (batch: td.Batch) => td.cat(batch.captions!.map((c) => embeddings[c as keyof typeof embeddings]));
    const forward: td.ForwardFn = (_m, sample, timestep, batch) => model.predictSync({ sample, timestep, encoderHiddenStates: batch.cond as td.Tensor });
    const trainer = new td.Trainer(model.unet!.module, data, { objective: "epsilon", steps: 1, batchSize: 4, shuffle: false, lr: 0, seed: 9, condition, forward, loss: td.priorPreservationLoss(0.5) });
    const { loss } = await trainer.trainStep();
    trainer.dispose();
    // The same draws by hand: noise, then timesteps, from a Generator seeded 9.
    const expected = await td.tidyAsync(async () => {
      const samples = await Promise.all([0, 1, 2, 3].map((j) => data.get(j)));
      const x0 = td.stack(samples.map((s) => s.image));
      const g = new td.Generator(9);
      const noise = td.randn(x0.shape, { generator: g });
      const times = td.sampleTimes("epsilon", 4, { kind: "uniform" }, 1000, g);
      const { noisy, target, modelTimesteps } = td.noisedBatch("epsilon", x0, noise, times, { alphasCumprod: td.alphasCumprodFor({}) });
      const context = td.cat(samples.map((s) => embeddings[s.caption as keyof typeof embeddings]));
      const pred = td.noGrad(() => model.predictSync({ sample: noisy, timestep: modelTimesteps, encoderHiddenStates: context }));
      return td.mseLoss(pred.narrow(0, 0, 2), target.narrow(0, 0, 2)).item() + 0.5 * td.mseLoss(pred.narrow(0, 2, 2), target.narrow(0, 2, 2)).item();
    });
    expect(loss).toBeCloseTo(expected, 6);
    Object.values(embeddings).forEach((t) => t.dispose());
    model.dispose();
  });
});

describe("DreamBooth class images", () => {
  /** A fake sampler: image k is filled with seed/100; it records the seeds it was asked for. */
  function fakeSampler() {
    const asked: number[] = [];
    const sample = async (_prompt: string, seeds: number[]) => {
      asked.push(...seeds);
      return td.tidy(() => td.stack(seeds.map((s) => td.full([3, 16, 16], s / 100))));
    };
    return { asked, sample };
  }

  it("are cached with their seeds; a rerun after an abort samples only the missing ones and reuses the rest", async () => {
    const dir = path.join(tmp, "classes");
    const first = fakeSampler();
    const controller = new AbortController();
    const interrupted = td.ensureClassImages(dir, {
      prompt: "a thing", count: 5, seed: 10, batchSize: 2, sample: first.sample, signal: controller.signal, onProgress: (done) => done === 2 && controller.abort(),
    });
    await expect(interrupted).rejects.toThrow("aborted");
    expect(first.asked).toEqual([10, 11]);
    const kept = fs.readFileSync(td.classImageFile(dir, 0, 10));
    const second = fakeSampler();
    const files = await td.ensureClassImages(dir, { prompt: "a thing", count: 5, seed: 10, batchSize: 2, sample: second.sample });
    expect(second.asked).toEqual([12, 13, 14]);
    expect(files.map((f) => path.basename(f))).toEqual([0, 1, 2, 3, 4].map((i) => `class-0000${i}-seed-${10 + i}.png`));
    expect(fs.readFileSync(files[0])).toEqual(kept);
    const third = fakeSampler();
    await td.ensureClassImages(dir, { prompt: "a thing", count: 5, seed: 10, sample: third.sample });
    expect(third.asked).toEqual([]);
    // The images are what the sampler made (8-bit PNG), readable at the model's size.
    const dataset = td.imageFilesDataset(files, 16, 3);
    const image = (await dataset.get(3)).image;
    expect(td.tidy(() => image.add(1).div(2).mean().item())).toBeCloseTo(Math.round(0.13 * 255) / 255, 6);
    image.dispose();
    expect(JSON.parse(fs.readFileSync(path.join(dir, td.CLASS_IMAGES_RECORD), "utf8"))).toEqual({ prompt: "a thing", seed: 10, settings: {} });
    await expect(td.ensureClassImages(dir, { prompt: "a dog", count: 5, seed: 10, sample: third.sample })).rejects.toThrow("holds class images made with other settings");
  });

  it("data-parallel ranks each make their share (i mod W = rank), reporting progress over it", async () => {
    const dir = path.join(tmp, "sharded");
    const ranks = [fakeSampler(), fakeSampler()];
    const progress: [number, number][][] = [[], []];
    const files = await Promise.all(ranks.map((r, rank) => td.ensureClassImages(dir, { prompt: "a thing", count: 5, seed: 0, batchSize: 2, sample: r.sample, shard: { rank, worldSize: 2 }, onProgress: (d, t) => progress[rank].push([d, t]) })));
    expect(ranks.map((r) => r.asked)).toEqual([[0, 2, 4], [1, 3]]);
    expect(progress).toEqual([[[0, 3], [2, 3], [3, 3]], [[0, 2], [2, 2]]]);
    expect(files[0]).toEqual(files[1]);
    expect(files[0].every((f) => fs.existsSync(f))).toBe(true);
    await expect(td.ensureClassImages(dir, { prompt: "a thing", count: 5, sample: ranks[0].sample, shard: { rank: 2, worldSize: 2 } })).rejects.toThrow("Expected integer in [0, 2) for ensureClassImages shard.rank but received 2");
  });
});

describe("dreambooth()", () => {
  /** Three 20×24 "photos" of the subject in [0, 1]: a bright 8×8 square at different places on a dark ground. */
  const subjectImages = td.keep(td.tidy(() => {
    const ys = td.arange(20).reshape([1, 20, 1]);
    const xs = td.arange(24).reshape([1, 1, 24]);
    const inside = (lo: number, hi: number, v: td.Tensor) => v.ge(lo).float().mul(v.lt(hi).float());
    return td.stack([0, 1, 2].map((i) => inside(2 + 4 * i, 10 + 4 * i, ys).mul(inside(3 + 5 * i, 11 + 5 * i, xs)).expand([3, 20, 24]).mul(0.8).add(0.1))); // (3, 3, 20, 24)
  }));
  const options = (out: string) => ({
    instanceImages: subjectImages, classNoun: "thing", out, steps: 4, batchSize: 1, numClassImages: 3, checkpointEvery: 2, seed: 1,
    sampling: { steps: 2 }, lora: { rank: 2 }, lr: 1e-2, validationPrompts: ["a photo of a sks thing"], validationEvery: 2, validationImages: 2, identifier: "sks",
  });

  it("writes a model directory with the adapters fused and the LoRA file; class images, validation and resume after an abort", async () => {
    const out = path.join(tmp, "whole");
    const model = td.loadModel(tinySd);
    const result = await td.dreambooth({ model, ...options(out) });
    expect(result).toMatchObject({ step: 4, aborted: false, out, identifier: "sks", instancePrompt: "a sks thing", classPrompt: "a thing" });
    expect(result.classImages.map((f) => path.basename(f))).toEqual(["class-00000-seed-1.png", "class-00001-seed-2.png", "class-00002-seed-3.png"]);
    expect(result.validation.map((f) => path.relative(out, f))).toEqual([path.join("validation", "step-00000002.png"), path.join("validation", "step-00000004.png")]);
    for (const name of [td.LORA_WEIGHTS_FILE, "training.json", "model_index.json", "unet/model.pt", td.CHECKSUMS_FILE]) expect(fs.existsSync(path.join(out, name)), name).toBe(true);
    const record = JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"));
    expect(record).toMatchObject({ method: "dreambooth", identifier: "sks", priorPreservation: true, priorLossWeight: 1, numClassImages: 3, steps: 4, lora: { rank: 2, alpha: 2 } });
    // The written model is the base model with the file's adapters fused, and generates.
    const written = td.loadModel(out);
    const fresh = td.loadModel(tinySd);
    const lora = td.LoRA.load(fresh.unet!.module, path.join(out, td.LORA_WEIGHTS_FILE));
    const x = { sample: td.keep(td.randn([1, 4, 8, 8], { generator: new td.Generator(0) })), timestep: 500, encoderHiddenStates: td.keep(await fresh.encodePrompt(["a sks thing"])) };
    expect(bytes(td.noGrad(() => written.predictSync(x)))).toEqual(bytes(td.noGrad(() => fresh.predictSync(x))));
    lora.dispose();
    fresh.dispose();
    written.dispose();
    model.dispose();

    // Abort at step 3, then rerun: the class images are reused and the adapters end the same.
    const resumedOut = path.join(tmp, "resumed");
    const baseline = await settledTensorCount();
    const controller = new AbortController();
    const first = td.loadModel(tinySd);
    const stopped = await td.dreambooth({ model: first, ...options(resumedOut), signal: controller.signal, onStep: ({ step }) => step === 3 && controller.abort() });
    expect([stopped.aborted, stopped.step, stopped.out]).toEqual([true, 3, null]);
    first.dispose();
    expect(await settledTensorCount()).toBe(baseline);
    const classImage = fs.readFileSync(stopped.classImages[0]);
    const logs: string[] = [];
    const second = td.loadModel(tinySd);
    const resumed = await td.dreambooth({ model: second, ...options(resumedOut), log: (l) => logs.push(l) });
    second.dispose();
    expect(logs.some((l) => l.startsWith("resuming from step 3"))).toBe(true);
    expect(logs.some((l) => l.startsWith("sampling"))).toBe(false);
    expect(fs.readFileSync(resumed.classImages[0])).toEqual(classImage);
    const a = td.readSafetensors(path.join(out, td.LORA_WEIGHTS_FILE)).tensors;
    const b = td.readSafetensors(path.join(resumedOut, td.LORA_WEIGHTS_FILE)).tensors;
    for (const k of Object.keys(a)) expect(bytes(b[k]).equals(bytes(a[k])), k).toBe(true);
    for (const t of [...Object.values(a), ...Object.values(b)]) t.dispose();
    // Asking again for the steps done trains nothing.
    const third = td.loadModel(tinySd);
    const again = await td.dreambooth({ model: third, ...options(resumedOut) });
    expect([again.step, again.losses.length]).toEqual([4, 0]);
    // Continuing the run with other settings (here another identifier) is refused.
    await expect(td.dreambooth({ model: third, ...options(resumedOut), steps: 6, identifier: "xyz" })).rejects.toThrow("are of a run with other settings");
    third.dispose();
  });

  it("trainTextEncoder trains the text encoder with the U-Net (here with prior preservation) and writes it", async () => {
    const out = path.join(tmp, "text-encoder");
    const model = td.loadModel(tinySd);
    const result = await td.dreambooth({ model, ...options(out), lora: undefined, trainTextEncoder: true, validationPrompts: undefined, lr: 1e-3, classDir: path.join(tmp, "whole", "class_images") });
    expect(result).toMatchObject({ step: 4, aborted: false, out });
    expect(JSON.parse(fs.readFileSync(path.join(out, "training.json"), "utf8"))).toMatchObject({ trainTextEncoder: true, priorPreservation: true, lora: null });
    const weights = (dir: string) => {
      const m = td.loadModel(dir);
      const w = td.tidy(() => Object.fromEntries(Object.entries(m.textEncoder!.module.namedParameters() as Record<string, td.Tensor>).map(([k, v]) => [k, bytes(v)])));
      m.dispose();
      return w;
    };
    const [before, after] = [weights(tinySd), weights(out)];
    // Every tensor moves (the token embedding in the rows of the prompts' tokens).
    expect(Object.keys(before).filter((k) => !before[k].equals(after[k])).length).toBe(Object.keys(before).length);
    // The run's settings include it: resuming the same out without it is refused.
    await expect(td.dreambooth({ model, ...options(out), lora: undefined, validationPrompts: undefined, lr: 1e-3, steps: 6, classDir: path.join(tmp, "whole", "class_images") })).rejects.toThrow("are of a run with other settings");
    model.dispose();
  });

  it("full fine-tuning without prior preservation changes the whole U-Net and writes no LoRA file", async () => {
    const out = path.join(tmp, "full");
    const model = td.loadModel(tinySd);
    const result = await td.dreambooth({ model, ...options(out), lora: undefined, priorPreservation: false, validationPrompts: undefined, identifier: undefined, lr: 1e-3 });
    expect(result.classImages).toEqual([]);
    expect(result.identifier).toBe(td.rareTokenIdentifier(model.tokenizer!, { seed: 1 }).identifier);
    expect(fs.existsSync(path.join(out, td.LORA_WEIGHTS_FILE))).toBe(false);
    expect(fs.existsSync(path.join(out, "class_images"))).toBe(false);
    const before = td.loadModel(tinySd);
    const after = td.loadModel(out);
    const changed = td.tidy(() => {
      const a = before.unet!.module.namedParameters() as Record<string, td.Tensor>;
      const b = after.unet!.module.namedParameters() as Record<string, td.Tensor>;
      return Object.keys(a).filter((k) => !bytes(a[k]).equals(bytes(b[k]))).length;
    });
    expect(changed).toBeGreaterThan(100);
    for (const m of [model, before, after]) m.dispose();
  });
});

describe("torch-diffusion dreambooth", () => {
  async function run(args: string[]) {
    let stdout = "";
    let stderr = "";
    const io = { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s), isTTY: false } };
    const code = await main(["dreambooth", ...args], io);
    return { code, stdout, stderr };
  }

  it("trains LoRA from a folder of images and prints how to prompt the subject", async () => {
    const images = path.join(tmp, "subject");
    fs.mkdirSync(images, { recursive: true });
    for (let i = 0; i < 3; i++) {
      const image = td.tidy(() => td.rand([3, 24, 20], { generator: new td.Generator(i) }));
      await td.writeImage(image, path.join(images, `photo-${i}.png`));
      image.dispose();
    }
    const out = path.join(tmp, "cli-out");
    const result = await run(["--model", tinySd, "--images", images, "--class-noun", "thing", "--out", out, "--steps", "2", "--num-class-images", "2", "--lora-rank", "2", "--checkpoint-every", "1", "--identifier", "sks"]);
    expect(result.stderr).toMatch(/dreambooth: sampling 2 class images of "a thing"/);
    expect(result.stderr).toMatch(/dreambooth: 2 steps in [\d.]+ s \(and 2 class images in [\d.]+ s\), loss .*the subject is "sks": prompt with "a sks thing", e\.g\. torch-diffusion generate --model .* "a photo of a sks thing"\n$/);
    expect(result).toMatchObject({ code: 0, stdout: `${out}\n` });
    expect(fs.existsSync(path.join(out, td.LORA_WEIGHTS_FILE))).toBe(true);
    td.verifyDirectoryChecksums(out);
    const json = await run(["--model", tinySd, "--images", images, "--class-noun", "thing", "--out", out, "--steps", "2", "--num-class-images", "2", "--lora-rank", "2", "--identifier", "sks", "--json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ command: "dreambooth", out, identifier: "sks", instancePrompt: "a sks thing", steps: 2, lora: path.join(out, td.LORA_WEIGHTS_FILE), classImages: 2 });

    // --train-text-encoder reaches dreambooth(): adapters on the text encoder too, in the same file.
    const withText = path.join(tmp, "cli-text-encoder");
    const trained = await run(["--model", tinySd, "--images", images, "--class-noun", "thing", "--out", withText, "--steps", "2", "--num-class-images", "2", "--lora-rank", "2", "--identifier", "sks", "--train-text-encoder", "--json"]);
    expect(trained.code, trained.stderr).toBe(0);
    expect(JSON.parse(trained.stdout)).toMatchObject({ trainTextEncoder: true, steps: 2 });
    expect(JSON.parse(fs.readFileSync(path.join(withText, "training.json"), "utf8"))).toMatchObject({ trainTextEncoder: true, lora: { rank: 2, textEncoderTargets: ["q_proj", "k_proj", "v_proj", "out_proj"] } });
    const { tensors } = td.readSafetensors(path.join(withText, td.LORA_WEIGHTS_FILE));
    expect(Object.keys(tensors).filter((k) => k.startsWith("text_encoder."))).toHaveLength(16);
    Object.values(tensors).forEach((t) => t.dispose());
  });

  it("fails in one line on bad input, and documents its options", async () => {
    expect(await run(["--images", path.join(tmp, "nope"), "--class-noun", "x", "--out", path.join(tmp, "o")])).toMatchObject({ code: 1, stderr: `torch-diffusion: --images: expected a folder of images of the subject but got ${JSON.stringify(path.join(tmp, "nope"))}\n` });
    expect((await run(["--images", tmp, "--out", path.join(tmp, "o")])).stderr).toBe("torch-diffusion: --class-noun is required\n");
    expect((await run(["--images", tmp, "--class-noun", "x", "--out", path.join(tmp, "o"), "--lora-alpha", "4"])).stderr).toBe("torch-diffusion: --lora-alpha needs --lora-rank\n");
    expect((await run(["--images", tmp, "--class-noun", "x", "--out", path.join(tmp, "o"), "--train-text-encoder=yes"])).stderr).toBe("torch-diffusion: dreambooth: --train-text-encoder takes no value (see torch-diffusion dreambooth --help)\n");
    expect((await run(["--images", tmp, "--class-noun", "x", "--out", path.join(tmp, "o"), "--nproc-per-node", "2", "--no-prior-preservation"])).stderr).toBe(
      "torch-diffusion: --nproc-per-node 2: a step's 1 examples (--batch 1) must split evenly over the ranks\n",
    );
    const help = await run(["--help"]);
    for (const option of ["--images DIR", "--class-noun NOUN", "--identifier V", "--prior-loss-weight L", "--num-class-images N", "--lora-rank R", "--no-prior-preservation", "--train-text-encoder", "--nproc-per-node N"]) expect(help.stdout).toContain(option);
  });
});
