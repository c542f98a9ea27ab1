import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { runCli } from "./helpers/cli";
import { fixtures } from "./helpers";
import { settledTensorCount } from "./helpers/training";

const tinyDir = path.join(fixtures, "models", "tiny-sd");
const model = td.loadModel(tinyDir);
const unet = model.unet!;
const values = (t: td.Tensor) => Array.from(t.toFloat32Array());
const maxDiff = (a: td.Tensor, b: td.Tensor) => td.tidy(() => a.sub(b).abs().max().item());

// The known answer: a 4×4 square of the 8×8 latent grid (a quarter of it).
const SQUARE = { top: 2, left: 3, size: 4 };
const square = td.keep(
  td.tensor(Float32Array.from({ length: 64 }, (_, i) => {
    const [y, x] = [Math.floor(i / 8), i % 8];
    return y >= SQUARE.top && y < SQUARE.top + SQUARE.size && x >= SQUARE.left && x < SQUARE.left + SQUARE.size ? 1 : 0;
  }), [1, 1, 8, 8]),
);

/** The tiny U-Net with another `forward` (its private fields stay on the original, so device and dtype are copied). */
function withForward(forward: (args: td.UNetForwardArgs) => Promise<td.Tensor>): td.UNet2DConditionModel {
  return Object.create(unet, { forward: { value: forward }, device: { value: unet.device }, dtype: { value: unet.dtype } }) as td.UNet2DConditionModel;
}

/**
 * A denoiser whose predictions differ between prompts only inside the square: the tiny U-Net
 * under a fixed (zero) context, plus 10 × (the prompt embedding's mean) inside the square.
 */
const crafted = withForward((args) =>
  td.tidyAsync(async () => {
    const base = await unet.forward({ ...args, encoderHiddenStates: td.zerosLike(args.encoderHiddenStates) });
    const perPrompt = args.encoderHiddenStates.float().mean(2).mean(1); // (B)
    return base.add(perPrompt.reshape([-1, 1, 1, 1]).mul(square).mul(10));
  }),
);
const latentModel = model.with({ unet: crafted }); // 3-channel 16×16 images, 8×8 latents
const pixelModel = model.with({ unet: crafted, vae: undefined }); // 4-channel 8×8 images
const latentPipe = new td.DiffEditPipeline(latentModel);
const pixelPipe = new td.DiffEditPipeline(pixelModel);

const rgb = td.keep(td.rand([1, 3, 16, 16], { generator: new td.Generator(9) }));
const pixels = td.keep(td.rand([1, 4, 8, 8], { generator: new td.Generator(5) }));
const texts = { sourcePrompt: "a photo of a shirt", targetPrompt: "a photo of a dress" };

describe("DiffEdit mask inference", () => {
  it("the crafted denoiser's prompts differ inside the square only", async () => {
    const context = await model.encodePrompt([texts.sourcePrompt, texts.targetPrompt]);
    const [source, target] = values(context.mean(2).mean(1));
    expect(Math.abs(source - target)).toBeGreaterThan(1e-3);
    context.dispose();
  });

  it("finds exactly the region where the two predictions differ, at latent and image resolution", async () => {
    const { mask, imageMask, map } = await latentPipe.generateMask({ image: rgb, ...texts, numInferenceSteps: 10, numMapsPerMask: 2, generator: new td.Generator(0) });
    expect(mask.shape).toEqual([1, 1, 8, 8]);
    expect(values(mask)).toEqual(values(square));
    expect(imageMask.shape).toEqual([1, 1, 16, 16]);
    expect(values(imageMask)).toEqual(values(td.interpolate(square, { size: [16, 16], mode: "nearest" })));
    // Inside, the map is clamped to 1 (the difference is 4× the mean, above 3×); outside it is ~0.
    expect(td.tidy(() => map.mul(square).sum().item())).toBeCloseTo(16, 5);
    expect(td.tidy(() => map.mul(square.mul(-1).add(1)).max().item())).toBeLessThan(1e-3);
  });

  it("normalises per image: a target equal to the source gives an empty mask beside a full square", async () => {
    const { mask } = await pixelPipe.generateMask({ image: pixels, sourcePrompt: texts.sourcePrompt, targetPrompt: [texts.targetPrompt, texts.sourcePrompt], numInferenceSteps: 10, numMapsPerMask: 1 });
    expect(mask.shape).toEqual([2, 1, 8, 8]);
    expect(values(mask.narrow(0, 0, 1))).toEqual(values(square));
    expect(values(mask.narrow(0, 1, 1)).every((v) => v === 0)).toBe(true);
  });

  it("is deterministic per generator, and the ratio moves the threshold", async () => {
    const real = new td.DiffEditPipeline(model);
    const options = { image: rgb, ...texts, numInferenceSteps: 10, numMapsPerMask: 2 };
    const a = await real.generateMask({ ...options, generator: new td.Generator(1) });
    const b = await real.generateMask({ ...options, generator: new td.Generator(1) });
    expect(values(a.map)).toEqual(values(b.map));
    // No gradient graph: one would keep every U-Net call's activations alive as long as the map.
    expect([a.map.requiresGrad, a.mask.requiresGrad, a.imageMask.requiresGrad]).toEqual([false, false, false]);
    const loose = await real.generateMask({ ...options, generator: new td.Generator(1), maskThresholdingRatio: 1 });
    expect(loose.mask.sum().item()).toBeGreaterThanOrEqual(a.mask.sum().item());
    // Ratio r keeps map > r/2 × mean: with r = 1, at least the pixels above the mean.
    expect(loose.mask.sum().item()).toBeGreaterThan(0);
  });
});

describe("DDIM inversion", () => {
  // A denoiser that predicts the same ε everywhere and always: DDIM and its inversion are then exact inverses.
  const constant = withForward(async (args) => td.fullLike(args.sample, 0.3));
  const constantModel = model.with({ unet: constant });

  it("returns the latents from the clean encoding up to strength, with the inverse timesteps", async () => {
    const steps: number[] = [];
    const inversion = await td.invert(model, { image: rgb, prompt: "a bag", numInferenceSteps: 10, strength: 0.5, onProgress: ({ step }) => steps.push(step) });
    expect(inversion.timesteps).toEqual([1, 101, 201, 301, 401]); // leading spacing, steps_offset 1
    expect(inversion.numInferenceSteps).toBe(10);
    expect(inversion.latents.map((l) => l.shape)).toEqual(Array(6).fill([1, 4, 8, 8]));
    expect(steps).toEqual([1, 2, 3, 4, 5]);
    // The clean latents are the VAE posterior's mean (deterministic without a generator).
    const posterior = await model.vae!.encode(rgb.mul(2).sub(1));
    expect(maxDiff(inversion.latents[0], model.vae!.scaleLatents(posterior.mean))).toBe(0);
    posterior.dispose();
    const again = await td.invert(model, { image: rgb, prompt: "a bag", numInferenceSteps: 10, strength: 0.5 });
    for (let i = 0; i < 6; i++) expect(values(again.latents[i])).toEqual(values(inversion.latents[i]));
    const sampled = await td.invert(model, { image: rgb, prompt: "a bag", numInferenceSteps: 10, strength: 0, samplePosterior: true, generator: new td.Generator(0) });
    expect(sampled.latents.length).toBe(1);
    expect(maxDiff(sampled.latents[0], inversion.latents[0])).toBeGreaterThan(0);
    for (const inv of [inversion, again, sampled]) inv.dispose();
  });

  it("round-trips exactly with a constant denoiser (DDIM over the same timesteps, guidance 1)", async () => {
    const pipe = new td.DiffEditPipeline(constantModel);
    for (const [numInferenceSteps, strength] of [[10, 1], [7, 0.6]] as const) {
      const inversion = await td.invert(constantModel, { image: rgb, prompt: "a bag", numInferenceSteps, strength });
      let last: td.Tensor | undefined;
      const out = await pipe.edit({ image: rgb, targetPrompt: "a bag", mask: td.ones([8, 8]), inversion, guidanceScale: 1, onProgress: ({ latents }) => { last?.dispose(); last = td.keep(latents.clone()); } });
      expect(maxDiff(last!, inversion.latents[0])).toBeLessThan(1e-4);
      last!.dispose();
      inversion.dispose();
      for (const t of [out.images, out.mask, out.imageMask]) t.dispose();
    }
  });

  it("fixed-point refinement: an image iterates while its residual shrinks, else keeps the unrefined step (a linear denoiser per image)", async () => {
    // ε̂ = c·x: the refinement map x ← (x' − B·c·x)/A contracts for c = 0.5 and grows for c = 10 (|B/A| ≈ 0.4–0.5 past the first step).
    const scales = td.keep(td.tensor([0.5, 10], [2, 1, 1, 1]));
    const linear = pixelModel.with({ unet: withForward(async (args) => args.sample.mul(scales)) });
    const image = td.rand([2, 4, 8, 8], { generator: new td.Generator(2) });
    const refined = await td.invert(linear, { image, prompt: "a bag", numInferenceSteps: 5, fixedPointIterations: 6 });
    const plain = await td.invert(linear, { image, prompt: "a bag", numInferenceSteps: 5 });
    const [inverse, forward] = [td.inverseScheduler(linear), linear.newScheduler("DDIMScheduler")];
    inverse.setTimesteps(5);
    forward.setTimesteps(5);
    // Row 0 lands on the step's fixed point: DDIM's denoising step takes it back to the previous latent.
    for (const [i, t] of refined.timesteps.entries()) {
      const [previous, latent] = [refined.latents[i], refined.latents[i + 1]];
      const residual = (x: td.Tensor) => td.tidy(() => forward.step(x.mul(scales), t, x).prevSample.sub(previous).narrow(0, 0, 1).abs().max().item());
      const unrefined = inverse.solveStep(previous.mul(scales), t, previous);
      expect(residual(latent), `t=${t}`).toBeLessThan(1e-4);
      if (i > 0) {
        expect(residual(unrefined), `t=${t}`).toBeGreaterThan(1e-3);
        // Row 1's residual grows from the start past the first step, so it keeps the unrefined step exactly.
        expect(maxDiff(latent.narrow(0, 1, 1), unrefined.narrow(0, 1, 1)), `t=${t}`).toBe(0);
      }
      unrefined.dispose();
    }
    // Without refinement both rows take the unrefined step.
    expect(maxDiff(plain.latents[1], inverse.solveStep(plain.latents[0].mul(scales), plain.timesteps[0], plain.latents[0]))).toBe(0);
    // A huge count ends once every image's residual stops shrinking (float32 stagnation at the latest).
    let calls = 0;
    const counted = pixelModel.with({ unet: withForward(async (args) => { calls++; return args.sample.mul(scales); }) });
    const many = await td.invert(counted, { image, prompt: "a bag", numInferenceSteps: 5, fixedPointIterations: 1e9 });
    expect(calls).toBeLessThan(5 * 60);
    for (const [i, latent] of many.latents.entries()) {
      const scale = td.tidy(() => latent.abs().max().item());
      expect(maxDiff(latent, refined.latents[i]) / scale, `latent ${i}`).toBeLessThan(1e-5);
    }
    for (const x of [refined, plain, many, inverse, forward, scales, image]) x.dispose();
  });

  it("concurrent inversions on one model, refined and not, equal the same calls made one after another", async () => {
    const options = [{ fixedPointIterations: 2 }, { fixedPointIterations: 0 }, { fixedPointIterations: 1, guidanceScale: 3 }];
    const run = (o: (typeof options)[number]) => td.invert(model, { image: rgb, prompt: "a bag", numInferenceSteps: 6, ...o });
    const sequential: td.Inversion[] = [];
    for (const o of options) sequential.push(await run(o));
    const concurrent = await Promise.all(options.map(run));
    for (const [i, inversion] of concurrent.entries()) {
      for (const [k, latent] of inversion.latents.entries()) expect(values(latent), `call ${i} latent ${k}`).toEqual(values(sequential[i].latents[k]));
    }
    expect(maxDiff(sequential[0].latents[6], sequential[1].latents[6])).toBeGreaterThan(0);
    for (const inversion of [...sequential, ...concurrent]) inversion.dispose();
  });

  it("fixed-point refinement lowers the round trip on real Fashion-MNIST test images with the built-in model", async () => {
    const builtin = td.loadModel(path.join(__dirname, "..", "models", "builtin"));
    const test = new td.FashionMNIST({ split: "test", pad32: true });
    const samples = Array.from({ length: 8 }, (_, i) => test.get(i));
    const real = td.tidy(() => td.cat(samples.map((s) => s.image.unsqueeze(0))).add(1).div(2)); // (8, 1, 32, 32)
    const prompt = samples.map((s) => td.fashionMnistCaption(s.label as number, "a photo of {a} {name}"));
    const pipe = new td.DiffEditPipeline(builtin);
    const errors: number[] = [];
    for (const fixedPointIterations of [0, 1]) {
      const inversion = await td.invert(builtin, { image: real, prompt, numInferenceSteps: 20, fixedPointIterations });
      const { images, mask, imageMask } = await pipe.edit({ image: real, targetPrompt: prompt, mask: td.ones([32, 32]), inversion, guidanceScale: 1 });
      errors.push(td.tidy(() => images.sub(real).abs().mean().item()));
      for (const t of [images, mask, imageMask, inversion]) t.dispose();
    }
    // 0.0161 and 0.0053 with the built-in model; on 100 images 0.0207 and 0.0065 (README, "DiffEdit and DDIM inversion").
    expect(errors[0]).toBeLessThan(0.03);
    expect(errors[1]).toBeLessThan(0.6 * errors[0]);
    real.dispose();
    builtin.dispose();
  });

  it("round-trips real Fashion-MNIST-like images with the built-in model", async () => {
    const builtin = td.loadModel(path.join(__dirname, "..", "models", "builtin"));
    // A bright trouser-like shape on the black background the model was trained on.
    const image = td.tidy(() => {
      const legs = td.zeros([1, 1, 32, 32]);
      const bars = td.cat([td.zeros([1, 1, 24, 9]), td.full([1, 1, 24, 5], 0.7), td.zeros([1, 1, 24, 4]), td.full([1, 1, 24, 5], 0.7), td.zeros([1, 1, 24, 9])], 3);
      return td.cat([legs.narrow(2, 0, 4), bars, legs.narrow(2, 0, 4)], 2); // (1, 1, 32, 32)
    });
    const prompt = "a photo of a pair of trousers";
    const inversion = await td.invert(builtin, { image, prompt, numInferenceSteps: 20 });
    const { images } = await new td.DiffEditPipeline(builtin).edit({ image, targetPrompt: prompt, mask: td.ones([32, 32]), inversion, guidanceScale: 1 });
    const error = td.tidy(() => images.sub(image).abs().mean().item());
    // 0.0064 here (the first built-in model: 0.013; 0.047 before the inversion solved the step for v-prediction).
    expect(error).toBeLessThan(0.02);
    inversion.dispose();
    builtin.dispose();
  });
});

describe("DiffEdit edits", () => {
  it("keeps pixels outside the mask exactly on a pixel model, and changes the inside", async () => {
    const stages: string[] = [];
    const { images, mask, imageMask } = await pixelPipe.edit({ image: pixels, ...texts, numInferenceSteps: 10, numMapsPerMask: 2, guidanceScale: 3, generator: new td.Generator(0), onProgress: ({ stage, step, total }) => stages.push(`${stage} ${step}/${total}`) });
    expect(values(mask)).toEqual(values(square));
    expect(values(imageMask)).toEqual(values(square));
    const outside = square.mul(-1).add(1);
    expect(maxDiff(images.mul(outside), pixels.mul(outside))).toBe(0);
    expect(maxDiff(images.mul(square), pixels.mul(square))).toBeGreaterThan(1e-3);
    // Two mask draws, 8 inversion steps (strength 0.8 of 10), 8 denoising steps, counted across the call.
    expect(stages).toEqual([
      "mask 1/18", "mask 2/18", ...[3, 4, 5, 6, 7, 8, 9, 10].map((s) => `invert ${s}/18`), ...[11, 12, 13, 14, 15, 16, 17, 18].map((s) => `denoise ${s}/18`),
    ]);
  });

  it("replaces the latents outside the mask with the inverted latents of each step (three calls, latent model)", async () => {
    const { mask } = await latentPipe.generateMask({ image: rgb, ...texts, numInferenceSteps: 10, numMapsPerMask: 1 });
    const inversion = await latentPipe.invert({ image: rgb, prompt: texts.sourcePrompt, numInferenceSteps: 10, inpaintStrength: 0.6 });
    expect(inversion.timesteps).toEqual([1, 101, 201, 301, 401, 501]);
    const outside = mask.mul(-1).add(1);
    const seen: number[] = [];
    await latentPipe.edit({
      image: rgb, targetPrompt: texts.targetPrompt, mask, inversion, guidanceScale: 2,
      onProgress: ({ step, latents, timestep }) => {
        const n = inversion.timesteps.length;
        seen.push(timestep);
        expect(maxDiff(latents.mul(outside), inversion.latents[n - step].mul(outside))).toBe(0);
        if (step < n) expect(maxDiff(latents.mul(mask), inversion.latents[n - step].mul(mask))).toBeGreaterThan(0);
      },
    });
    expect(seen).toEqual([501, 401, 301, 201, 101, 1]);
    inversion.dispose();
  });

  it("takes masks at image or latent resolution, files included; batches one image over several prompts", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-diffedit-"));
    const file = path.join(dir, "mask.png");
    await td.writeImage(td.interpolate(square, { size: [16, 16], mode: "nearest" }).index(0), file);
    expect(values(await td.readEditMask(file, [16, 16], [8, 8]))).toEqual(values(square));
    expect(values(await td.readEditMask(square.index(0).index(0), [16, 16], [8, 8]))).toEqual(values(square));
    const { images, mask } = await latentPipe.edit({ image: rgb, sourcePrompt: texts.sourcePrompt, targetPrompt: ["a photo of a coat", "a photo of a bag"], mask: file, numInferenceSteps: 4, guidanceScale: 2 });
    expect(images.shape).toEqual([2, 3, 16, 16]);
    expect(mask.shape).toEqual([2, 1, 8, 8]);
  });

  it("strength 0 returns the input; a given inversion sets the steps", async () => {
    const none = await pixelPipe.edit({ image: pixels, ...texts, inpaintStrength: 0, numInferenceSteps: 4, numMapsPerMask: 1 });
    expect(values(none.images)).toEqual(values(pixels));
    const inversion = await pixelPipe.invert({ image: pixels, prompt: texts.sourcePrompt, numInferenceSteps: 5, inpaintStrength: 0.4 });
    const steps: number[] = [];
    await pixelPipe.edit({ image: pixels, targetPrompt: texts.targetPrompt, mask: square, inversion, onProgress: ({ step }) => steps.push(step) });
    expect(steps).toEqual([1, 2]);
    inversion.dispose();
  });

  it("rejects bad options with clear messages", async () => {
    const inversion = await pixelPipe.invert({ image: pixels, prompt: texts.sourcePrompt, numInferenceSteps: 5 });
    const cases: [Promise<unknown>, string][] = [
      [pixelPipe.generateMask({ image: pixels, targetPrompt: "x" }), "generateMask: sourcePrompt (or sourcePromptEmbeds) is required"],
      [pixelPipe.generateMask({ image: pixels, ...texts, targetPromptEmbeds: td.zeros([1, 77, 32]) }), "generateMask: give targetPrompt or targetPromptEmbeds, not both"],
      [pixelPipe.generateMask({ image: pixels, ...texts, sourcePrompt: 3 as unknown as string }), "Expected string or non-empty array of strings for sourcePrompt but received 3 of type number"],
      [pixelPipe.generateMask({ image: pixels, ...texts, numMapsPerMask: 0 }), "Expected positive integer for numMapsPerMask but received 0 of type number"],
      [pixelPipe.generateMask({ image: pixels, ...texts, maskEncodeStrength: 0 }), "Expected number in (0, 1] for maskEncodeStrength but received 0 of type number"],
      [pixelPipe.generateMask({ image: pixels, ...texts, maskThresholdingRatio: -1 }), "Expected positive number for maskThresholdingRatio but received -1 of type number"],
      [pixelPipe.generateMask({ image: pixels, ...texts, maskEncodeStrength: 0.01 }), "generateMask: maskEncodeStrength 0.01 of 50 steps reaches no timestep; raise it or numInferenceSteps"],
      [pixelPipe.generateMask({ image: pixels, sourcePrompt: ["a", "b"], targetPrompt: ["a", "b", "c"] }), "generateMask: 1 images, 2 source prompts, 3 target prompts: each must be 1 or the same number"],
      [pixelPipe.edit({ image: pixels, ...texts, inpaintStrength: 2 }), "Expected number in [0, 1] for inpaintStrength but received 2 of type number"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: square }), "edit: sourcePrompt (or sourcePromptEmbeds) is required"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: td.ones([1, 1, 5, 5]), inversion }), "edit mask: expected 8×8 (latent) or 8×8 (image) but the mask is 5×5"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: td.ones([1, 2, 8, 8]), inversion }), "edit mask: expected a tensor [h, w], [1, h, w] or [B, 1, h, w] but received shape [1, 2, 8, 8]"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: square, inversion, numInferenceSteps: 6 }), "edit: numInferenceSteps 6 disagrees with the inversion's 5"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: square, inversion, inpaintStrength: 0.5 }), "edit: inpaintStrength 0.5 disagrees with the inversion's 4 of 5 steps"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: square, inversion: { latents: [] } as unknown as td.Inversion }), "Expected Inversion (from invert) for inversion but received Object"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", mask: square, inversion, scheduler: new td.DDIMScheduler({ ...model.schedulerConfig, timestep_spacing: "trailing" }) }), "edit: DDIMScheduler's last 4 timesteps [799, 599, 399, 199] are not the inversion's [601, 401, 201, 1] reversed; use DDIMScheduler on the model's config"],
      [td.invert(model, { image: rgb, prompt: "x", strength: -0.5 }), "Expected number in [0, 1] for strength but received -0.5 of type number"],
      [td.invert(model, { image: td.rand([2, 3, 16, 16]), prompt: ["a", "b", "c"] }), "invert: 2 images, 3 prompts: each must be 1 or the same number"],
      [td.invert(model, { image: rgb, prompt: "x", fixedPointIterations: -1 }), "Expected non-negative integer for fixedPointIterations but received -1 of type number"],
      [pixelPipe.invert({ image: pixels, prompt: "x", fixedPointIterations: 1.5 }), "Expected non-negative integer for fixedPointIterations but received 1.5 of type number"],
      [pixelPipe.edit({ image: pixels, targetPrompt: "x", sourcePrompt: "y", mask: square, inversionFixedPointIterations: "2" as unknown as number }), "Expected non-negative integer for inversionFixedPointIterations but received \"2\" of type string"],
    ];
    for (const [call, message] of cases) await expect(call, message).rejects.toThrow(message);
    expect(() => new td.DiffEditPipeline(model.with({ textEncoder: undefined }))).toThrow("DiffEditPipeline: the model");
    inversion.dispose();
  });
});

describe("DiffEdit resources", () => {
  it("leaks no tensors; abort stops within one step in every stage and leaks nothing", async () => {
    const options = { image: pixels, ...texts, numInferenceSteps: 6, numMapsPerMask: 2, generator: new td.Generator(0) };
    const badMask = td.ones([2, 2]);
    const first = await pixelPipe.edit(options);
    for (const t of [first.images, first.mask, first.imageMask]) t.dispose();
    const before = await settledTensorCount();
    const out = await pixelPipe.edit(options);
    for (const t of [out.images, out.mask, out.imageMask]) t.dispose();
    expect(td.memory().numTensors).toBe(before);
    const inversion = await pixelPipe.invert({ image: pixels, prompt: "x", numInferenceSteps: 4 });
    inversion.dispose();
    const mask = await pixelPipe.generateMask(options);
    for (const t of [mask.mask, mask.imageMask, mask.map]) t.dispose();
    expect(td.memory().numTensors).toBe(before);

    for (const stopAt of ["mask", "invert", "denoise"]) {
      const controller = new AbortController();
      const seen: string[] = [];
      const run = pixelPipe.edit({ ...options, signal: controller.signal, onProgress: ({ stage }) => { seen.push(stage); if (stage === stopAt) controller.abort(); } });
      await expect(run).rejects.toThrow("The operation was aborted");
      expect(seen.filter((s) => s === stopAt)).toEqual([stopAt]);
      expect(td.memory().numTensors, stopAt).toBe(before);
    }
    const controller = new AbortController();
    controller.abort();
    await expect(td.invert(pixelModel, { image: pixels, prompt: "x", signal: controller.signal })).rejects.toThrow("The operation was aborted");
    await expect(pixelPipe.edit({ ...options, mask: badMask })).rejects.toThrow("edit mask: expected 8×8 (latent) or 8×8 (image) but the mask is 2×2");
    expect(td.memory().numTensors).toBe(before);
  });

  it("refined inversion leaks nothing, with images that stop early and an abort between refinements", async () => {
    const scales = td.keep(td.tensor([0.5, 10], [2, 1, 1, 1])); // row 1's refinement grows: it stops and keeps an iterate
    const linear = pixelModel.with({ unet: withForward(async (args) => args.sample.mul(scales)) });
    const image = td.rand([2, 4, 8, 8], { generator: new td.Generator(4) });
    const warm = await td.invert(linear, { image, prompt: "a bag", numInferenceSteps: 5, fixedPointIterations: 4 });
    warm.dispose();
    const before = await settledTensorCount();
    const again = await td.invert(linear, { image, prompt: "a bag", numInferenceSteps: 5, fixedPointIterations: 4 });
    again.dispose();
    expect(td.memory().numTensors).toBe(before);
    let calls = 0;
    const controller = new AbortController();
    // The abort lands after the second model call of the second step: inside its refinements.
    const counting = pixelModel.with({ unet: withForward(async (args) => { if (++calls === 7) controller.abort(); return args.sample.mul(scales); }) });
    await expect(td.invert(counting, { image, prompt: "a bag", numInferenceSteps: 5, fixedPointIterations: 4, signal: controller.signal })).rejects.toThrow("The operation was aborted");
    expect(calls).toBe(7);
    expect(td.memory().numTensors).toBe(before);
    for (const t of [scales, image]) t.dispose();
  });
});

describe("torch-diffusion edit --method diffedit", () => {
  const run = (args: string[]) => runCli(args);

  it("writes the edited image and the mask; keeps the image where the mask is black", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-diffedit-cli-"));
    const input = path.join(dir, "in.png");
    await td.writeImage(rgb.index(0), input);
    const maskFile = path.join(dir, "given-mask.png");
    await td.writeImage(td.interpolate(square, { size: [16, 16], mode: "nearest" }).index(0), maskFile);
    const args = ["edit", "--method", "diffedit", "--model", tinyDir, "--image", input, "--source-prompt", "a shirt", "--prompt", "a dress", "--steps", "4", "--seed", "1"];
    const inferred = await run([...args, "--out", path.join(dir, "out.png"), "--mask-out", path.join(dir, "mask.png")]);
    expect(inferred.stderr).toMatch(/^diffedit: 1 image 16×16, mask from 10 noise draws, 3 inversion \+ 3 denoising steps of DDIMScheduler, seed 1, guidance 7.5, [\d.]+ s\n$/);
    expect(inferred).toMatchObject({ code: 0, stdout: `${path.join(dir, "out.png")}\n${path.join(dir, "mask.png")}\n` });
    const written = await td.readImage(path.join(dir, "mask.png"), { channels: 1 });
    expect(written.shape).toEqual([1, 1, 16, 16]);
    expect(values(written).every((v) => v === 0 || v === 1)).toBe(true);

    const given = await run([...args, "--mask", maskFile, "--out", path.join(dir, "given.png")]);
    expect(given.code).toBe(0);
    expect(given.stderr).toMatch(/^diffedit: 1 image 16×16, 3 inversion/);
    expect((await td.readImage(path.join(dir, "given.png"))).shape).toEqual([1, 3, 16, 16]);

    // Refined inversion: the same call with two refinements per step, reported, and a different image.
    const refined = await run([...args, "--mask", maskFile, "--inversion-iterations", "2", "--out", path.join(dir, "refined.png"), "--json"]);
    expect(refined.code).toBe(0);
    expect(refined.stderr).toMatch(/^diffedit: 1 image 16×16, 3 inversion \(2 fixed-point refinements each\) \+ 3 denoising steps/);
    expect(JSON.parse(refined.stdout)).toMatchObject({ method: "diffedit", inversionSteps: 3, inversionIterations: 2 });
    const [plainImage, refinedImage] = await Promise.all([td.readImage(path.join(dir, "given.png")), td.readImage(path.join(dir, "refined.png"))]);
    expect(maxDiff(plainImage, refinedImage)).toBeGreaterThan(0);

    // A guidance interval that holds no decoding step: the target text's pass alone, as guidance 1 gives.
    const outside = await run([...args, "--mask", maskFile, "--guidance-interval", "2000,3000", "--out", path.join(dir, "outside.png"), "--json"]);
    expect(outside.stderr).toMatch(/^diffedit: 1 image 16×16, 3 inversion \+ 3 denoising steps of DDIMScheduler, seed 1, guidance 7.5 on timesteps 2000–3000, [\d.]+ s\n$/);
    expect(JSON.parse(outside.stdout)).toMatchObject({ method: "diffedit", guidanceInterval: [2000, 3000] });
    const unguided = await run([...args, "--mask", maskFile, "--guidance", "1", "--out", path.join(dir, "unguided.png")]);
    expect(unguided.code).toBe(0);
    const [outsideImage, unguidedImage] = await Promise.all([td.readImage(path.join(dir, "outside.png")), td.readImage(path.join(dir, "unguided.png"))]);
    expect(maxDiff(outsideImage, unguidedImage)).toBe(0);
    expect(maxDiff(outsideImage, plainImage)).toBeGreaterThan(0);
  });

  it("reports bad combinations in one line", async () => {
    const image = path.join(fixtures, "..", "..", "package.json"); // exists; never read as an image: the checks come first
    const cases: [string[], string][] = [
      [["edit", "--method", "magic", "--prompt", "x", "--image", image], '--method: expected sdedit or diffedit but got "magic"'],
      [["edit", "--prompt", "x", "--image", image, "--source-prompt", "y"], "--source-prompt: only with --method diffedit"],
      [["edit", "--prompt", "x", "--image", image, "--mask-out", "m.png"], "--mask-out: only with --method diffedit"],
      [["edit", "--prompt", "x", "--image", image, "--inversion-iterations", "1"], "--inversion-iterations: only with --method diffedit"],
      [["edit", "--method", "diffedit", "--prompt", "x", "--source-prompt", "y", "--image", image, "--guidance-interval", "900,200"], '--guidance-interval: expected LOW,HIGH timesteps with LOW ≤ HIGH, or all but got "900,200"'],
      [["edit", "--method", "diffedit", "--prompt", "x", "--source-prompt", "y", "--image", image, "--inversion-iterations", "-1"], '--inversion-iterations: expected a non-negative integer but got "-1"'],
      [["edit", "--method", "diffedit", "--prompt", "x", "--image", image], "--source-prompt is required"],
      [["edit", "--method", "diffedit", "--model", tinyDir, "--prompt", "x", "--source-prompt", "y", "--image", image, "--batch", "2"], "--batch: --method diffedit makes one image per prompt (its DDIM decoding is deterministic)"],
      [["edit", "--method", "diffedit", "--model", tinyDir, "--prompt", "x", "--source-prompt", "y", "--image", image, "--scheduler", "euler"], "--scheduler euler: --method diffedit runs DDIM (its inversion is DDIM's); leave --scheduler out or give ddim"],
      [["edit", "--method", "diffedit", "--prompt", "x", "--source-prompt", "y", "--image", image, "--mask-out", "m.bmp"], '--mask-out: m.bmp: cannot write images as ".bmp"; use one of .png, .jpg, .jpeg, .webp, .tif, .tiff (PNG, JPEG, WebP, TIFF)'],
    ];
    for (const [args, message] of cases) expect(await run(args), args.join(" ")).toEqual({ code: 1, stdout: "", stderr: `torch-diffusion: ${message}\n` });
  });
});
