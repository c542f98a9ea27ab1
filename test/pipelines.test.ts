import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures, withEnv } from "./helpers";
import { settledTensorCount } from "./helpers/training";

const modelDir = path.join(fixtures, "models", "tiny-sd");
const pipe = td.Text2ImagePipeline.fromPretrained(modelDir);
const editor = new td.Img2ImagePipeline(pipe.model);
const ddim = () => td.schedulerFromConfig({ ...pipe.model.scheduler.config, _class_name: "DDIMScheduler" });
const base = { prompt: "a photo of a sneaker", numInferenceSteps: 4, height: 16, width: 16 };

describe("Text2ImagePipeline", () => {
  it("generates images in [0, 1] of the requested size, deterministic per seed", async () => {
    const a = await pipe.generate({ ...base, scheduler: ddim(), generator: new td.Generator(1) });
    const b = await pipe.generate({ ...base, scheduler: ddim(), generator: new td.Generator(1) });
    const c = await pipe.generate({ ...base, scheduler: ddim(), generator: new td.Generator(2) });
    expect(a.images.shape).toEqual([1, 3, 16, 16]);
    expect(a.images.min().item()).toBeGreaterThanOrEqual(0);
    expect(a.images.max().item()).toBeLessThanOrEqual(1);
    expect(Array.from(a.images.toFloat32Array())).toEqual(Array.from(b.images.toFloat32Array()));
    expect(a.images.sub(c.images).abs().max().item()).toBeGreaterThan(1e-4);
  });

  it("batches prompts × images per prompt, with negative prompts and any scheduler", async () => {
    const { images } = await pipe.generate({ ...base, prompt: ["a bag", "a coat"], negativePrompt: ["blurry", "dark"], numImagesPerPrompt: 2, scheduler: td.schedulerFromConfig({ _class_name: "EulerDiscreteScheduler" }), generator: new td.Generator(0) });
    expect(images.shape).toEqual([4, 3, 16, 16]);
  });

  it("guidance scale 1 skips the unconditional pass and differs from guided sampling", async () => {
    const calls: number[] = [];
    const unguided = await pipe.generate({ ...base, guidanceScale: 1, scheduler: ddim(), generator: new td.Generator(3), onProgress: ({ step }) => calls.push(step) });
    const guided = await pipe.generate({ ...base, guidanceScale: 7.5, scheduler: ddim(), generator: new td.Generator(3) });
    expect(calls).toEqual([1, 2, 3, 4]);
    expect(unguided.images.sub(guided.images).abs().max().item()).toBeGreaterThan(1e-5);
  });

  it("guidanceInterval guides only the steps inside it and runs the conditional pass alone elsewhere", async () => {
    const run = async (guidanceInterval?: [number, number], guidanceScale = 7.5) => {
      const batches: number[] = [];
      const predict = pipe.model.predict;
      pipe.model.predict = (args) => (batches.push(args.sample.shape[0]), predict.call(pipe.model, args));
      try {
        const { images } = await pipe.generate({ ...base, prompt: ["a bag", "a coat"], guidanceScale, guidanceInterval, scheduler: ddim(), generator: new td.Generator(3) });
        return { images: Array.from(images.toFloat32Array()), batches };
      } finally {
        pipe.model.predict = predict;
      }
    };
    const always = await run();
    const ddimTimesteps = (() => { const s = ddim(); s.setTimesteps(4); return s.timesteps; })(); // [751, 501, 251, 1]
    expect(await run([0, 1000])).toEqual(always);
    // no step inside: the unguided images (guidance scale 1), bit for bit
    const never = await run([2000, 3000]);
    expect(never.batches).toEqual([2, 2, 2, 2]);
    expect(never.images).toEqual((await run(undefined, 1)).images);
    // the middle steps only
    const middle = await run([ddimTimesteps[2], ddimTimesteps[1]]);
    expect(middle.batches).toEqual([2, 4, 4, 2]);
    expect(middle.images).not.toEqual(always.images);
    expect(middle.images).not.toEqual(never.images);
    await expect(pipe.generate({ ...base, guidanceInterval: [700, 100] })).rejects.toThrow("Expected [low, high] timesteps with low ≤ high for guidanceInterval but received");
    await expect(pipe.generate({ ...base, guidanceInterval: "all" as never })).rejects.toThrow("for guidanceInterval");
  });

  it("leaks no tensors across calls", async () => {
    const scheduler = ddim();
    const first = await pipe.generate({ ...base, scheduler, generator: new td.Generator(0) });
    first.images.dispose();
    const before = await settledTensorCount();
    const second = await pipe.generate({ ...base, scheduler, generator: new td.Generator(0) });
    second.images.dispose();
    expect(td.memory().numTensors).toBe(before);
  });

  it("records no autograd history, and leaves grad mode on for code running between steps", async () => {
    const [param] = pipe.model.unet.parameters();
    expect(param.requiresGrad).toBe(true); // what makes a recorded graph possible
    param.dispose();
    const seen: boolean[] = [];
    const { images } = await pipe.generate({ ...base, scheduler: ddim(), onProgress: ({ latents }) => seen.push(latents.requiresGrad, td.isGradEnabled()) });
    expect(seen).toEqual([false, true, false, true, false, true, false, true]);
    expect(images.requiresGrad).toBe(false);
    expect(td.isGradEnabled()).toBe(true);
    images.dispose();
  });

  it("abort stops within one step and leaks nothing", async () => {
    const scheduler = ddim();
    (await pipe.generate({ ...base, scheduler })).images.dispose();
    const before = await settledTensorCount();
    const controller = new AbortController();
    const steps: number[] = [];
    const run = pipe.generate({ ...base, numInferenceSteps: 10, scheduler, signal: controller.signal, onProgress: ({ step }) => { steps.push(step); if (step === 2) controller.abort(); } });
    await expect(run).rejects.toThrow("The operation was aborted");
    expect(steps).toEqual([1, 2]);
    expect(td.memory().numTensors).toBe(before);
  });

  it("takes precomputed prompt embeddings (and negatives) in place of texts, with the same images", async () => {
    const { prompt: _, ...rest } = base;
    const texts = await pipe.generate({ ...base, negativePrompt: "blurry", numImagesPerPrompt: 2, scheduler: ddim(), generator: new td.Generator(5) });
    const promptEmbeds = await pipe.model.encodePrompt([base.prompt]);
    const negativePromptEmbeds = await pipe.model.encodePrompt(["blurry"]);
    const embeds = await pipe.generate({ ...rest, promptEmbeds, negativePromptEmbeds, numImagesPerPrompt: 2, scheduler: ddim(), generator: new td.Generator(5) });
    expect(embeds.images.shape).toEqual([2, 3, 16, 16]);
    expect(embeds.images.sub(texts.images).abs().max().item()).toBeLessThan(1e-6);
    // An embedding between two prompts (Imagic's interpolation) is just another tensor.
    const other = await pipe.model.encodePrompt(["a photo of a bag"]);
    const between = await pipe.generate({ ...rest, promptEmbeds: promptEmbeds.mul(0.5).add(other.mul(0.5)), scheduler: ddim(), generator: new td.Generator(5) });
    expect(between.images.shape).toEqual([1, 3, 16, 16]);
    await expect(pipe.generate({ ...base, promptEmbeds })).rejects.toThrow("generate: give prompt or promptEmbeds, not both");
    await expect(pipe.generate({ ...rest })).rejects.toThrow("generate: prompt (or promptEmbeds) is required");
    await expect(pipe.generate({ ...rest, promptEmbeds: promptEmbeds.index(0) })).rejects.toThrow("promptEmbeds: expected text embeddings (B, T, D) but received shape [");
    await expect(pipe.generate({ ...rest, promptEmbeds, negativePromptEmbeds: negativePromptEmbeds.narrow(1, 0, 3) })).rejects.toThrow("generate: negativePromptEmbeds has shape [1, 3, 16] but promptEmbeds has [1, ");
  });

  it("clipSkip conditions on an earlier hidden state through the final layer norm", async () => {
    const c = pipe.model;
    const { inputIds } = c.tokenizer.encode(["a photo of a sneaker"], { maxLength: c.tokenizer.modelMaxLength, padding: "max_length" });
    const states = await c.textEncoder.hiddenStates({ inputIds });
    const expected = await c.textEncoder.finalLayerNorm(states.at(-2)!);
    const skipped = await c.encodePrompt(["a photo of a sneaker"], { clipSkip: 1 });
    expect(Array.from(skipped.toFloat32Array())).toEqual(Array.from(expected.toFloat32Array()));
    const last = await c.encodePrompt(["a photo of a sneaker"]);
    expect(last.sub(skipped).abs().max().item()).toBeGreaterThan(1e-3);
    const layers = states.length - 1;
    await expect(c.encodePrompt(["x"], { clipSkip: layers })).rejects.toThrow(`Expected integer in [0, ${layers - 1}] for this ${layers}-layer text encoder for clipSkip but received ${layers}`);
    const { images } = await pipe.generate({ ...base, clipSkip: 1, scheduler: ddim(), generator: new td.Generator(0) });
    expect(images.shape).toEqual([1, 3, 16, 16]);
  });

  it("concurrent calls on one pipeline equal sequential ones (each call steps its own scheduler)", async () => {
    const calls = [
      { numInferenceSteps: 3, scheduler: ddim() },
      { numInferenceSteps: 6, scheduler: ddim() },
      { numInferenceSteps: 4, scheduler: pipe.model.newScheduler("DPMSolverMultistepScheduler") },
      { numInferenceSteps: 5, scheduler: pipe.model.newScheduler("UniPCMultistepScheduler") },
      { numInferenceSteps: 5 }, // the model's own scheduler
    ];
    const run = (c: (typeof calls)[number], seed: number) => pipe.generate({ ...base, ...c, generator: new td.Generator(seed) });
    const sequential: td.Tensor[] = [];
    for (const [i, c] of calls.entries()) sequential.push((await run(c, i)).images);
    const concurrent = await Promise.all(calls.map((c, i) => run(c, i)));
    for (const [i, { images }] of concurrent.entries()) {
      expect(Array.from(images.toFloat32Array()), `call ${i}`).toEqual(Array.from(sequential[i].toFloat32Array()));
      images.dispose();
      sequential[i].dispose();
    }
    // One scheduler object passed to concurrent calls is copied, not shared.
    const shared = pipe.model.newScheduler("DPMSolverMultistepScheduler");
    const untouched = [...shared.timesteps];
    const [a, b] = await Promise.all([run({ numInferenceSteps: 4, scheduler: shared }, 7), run({ numInferenceSteps: 8, scheduler: shared }, 7)]);
    const [a1, b1] = [await run({ numInferenceSteps: 4, scheduler: shared }, 7), await run({ numInferenceSteps: 8, scheduler: shared }, 7)];
    expect(Array.from(a.images.toFloat32Array())).toEqual(Array.from(a1.images.toFloat32Array()));
    expect(Array.from(b.images.toFloat32Array())).toEqual(Array.from(b1.images.toFloat32Array()));
    expect(shared.timesteps).toEqual(untouched);
  });

  it("refuses, before any work, a call whose memory estimate exceeds the limit", async () => {
    // The estimate is an upper bound of the measured peak (see estimateDenoiseBytes).
    const perImage = pipe.model.estimateDenoiseBytes(1, { height: 16, width: 16 });
    expect(perImage).toBeGreaterThan(0);
    expect(pipe.model.estimateDenoiseBytes(4, { height: 32, width: 32 })).toBeGreaterThan(4 * 4 * perImage); // attention grows as (hw)²
    await withEnv({ TORCH_DIFFUSION_MEMORY_LIMIT_MB: String((10 * perImage) / 2 ** 20) }, async () => {
      const before = td.memory().numTensors;
      await expect(pipe.generate({ ...base, numImagesPerPrompt: 8 })).rejects.toThrow(/^generate: 16 denoiser inputs of 16×16 would need about [\d.]+ GiB, more than the [\d.]+ GiB limit \(90% of this machine's memory, or TORCH_DIFFUSION_MEMORY_LIMIT_MB\): use fewer images or a smaller size$/);
      await expect(editor.edit({ image: td.rand([1, 3, 64, 64]), prompt: "x", numInferenceSteps: 2 })).rejects.toThrow(/^edit: 2 denoiser inputs of 64×64 would need/);
      expect(td.memory().numTensors).toBeLessThanOrEqual(before + 1);
      const { images } = await pipe.generate({ ...base, numImagesPerPrompt: 2, numInferenceSteps: 1 }); // 4 inputs: within the limit
      images.dispose();
    });
  });

  it("validates its options", async () => {
    await expect(pipe.generate({ ...base, prompt: 3 as unknown as string })).rejects.toThrow("Expected string or non-empty array of strings for prompt but received 3 of type number");
    await expect(pipe.generate({ ...base, height: 15 })).rejects.toThrow("Expected multiple of 2 for height but received 15 of type number");
    await expect(pipe.generate({ ...base, numInferenceSteps: 0 })).rejects.toThrow("Expected positive integer for numInferenceSteps but received 0 of type number");
  });
});

describe("Img2ImagePipeline (SDEdit)", () => {
  const input = td.keep(td.rand([1, 3, 16, 16], { generator: new td.Generator(9) }));

  it("strength 0 returns the input", async () => {
    const { images } = await editor.edit({ image: input, prompt: "a dress", strength: 0, numInferenceSteps: 4 });
    expect(Array.from(images.toFloat32Array())).toEqual(Array.from(input.toFloat32Array()));
  });

  it("runs only the tail of the schedule for a partial strength, deterministically", async () => {
    const steps: number[] = [];
    const a = await editor.edit({ image: input, prompt: "a dress", strength: 0.5, numInferenceSteps: 8, scheduler: ddim(), generator: new td.Generator(4), onProgress: ({ step }) => steps.push(step) });
    const b = await editor.edit({ image: input, prompt: "a dress", strength: 0.5, numInferenceSteps: 8, scheduler: ddim(), generator: new td.Generator(4) });
    expect(steps).toEqual([1, 2, 3, 4]);
    expect(a.images.shape).toEqual([1, 3, 16, 16]);
    expect(Array.from(a.images.toFloat32Array())).toEqual(Array.from(b.images.toFloat32Array()));
  });

  it("edits a PNG file (a stroke painting) and rejects sizes the VAE cannot take", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-"));
    const file = path.join(dir, "strokes.png");
    await td.writeImage(input.index(0), file);
    const { images } = await editor.edit({ image: file, prompt: "a bag", strength: 0.75, numInferenceSteps: 4, scheduler: ddim(), generator: new td.Generator(0) });
    expect(images.shape).toEqual([1, 3, 16, 16]);
    await expect(editor.edit({ image: td.rand([1, 3, 15, 16]), prompt: "x" })).rejects.toThrow("edit image: height and width must be multiples of 2 but the image is 15×16");
    await expect(editor.edit({ image: input, prompt: "x", strength: 1.5 })).rejects.toThrow("Expected number in [0, 1] for strength but received 1.5 of type number");
  });

  it("timestepsForStrength matches diffusers' get_timesteps", () => {
    const ts = [900, 800, 700, 600, 500, 400, 300, 200, 100, 0];
    expect(td.timestepsForStrength(ts, 10, 0.3)).toEqual({ timesteps: [200, 100, 0], startIndex: 7 });
    expect(td.timestepsForStrength(ts, 10, 1).timesteps).toEqual(ts);
    expect(td.timestepsForStrength(ts, 10, 0).timesteps).toEqual([]);
  });
});

describe("guidance", () => {
  it("classifier-free guidance and its rescale follow the formulas", () => {
    const u = td.tensor([[1, 2, 3, 4]]);
    const c = td.tensor([[2, 2, 5, 0]]);
    expect(new td.ClassifierFreeGuidance(3).combine([u, c]).toArray()).toEqual([[4, 2, 9, -8]]);
    const guided = td.tensor([[4, 2, 9, -8]]);
    const phi = 0.7;
    const rescaled = guided.mul(c.std([1], { keepdim: true }).div(guided.std([1], { keepdim: true })));
    const expected = rescaled.mul(phi).add(guided.mul(1 - phi)).toFloat32Array();
    expect(Array.from(new td.ClassifierFreeGuidance(3, phi).combine([u, c]).toFloat32Array())).toEqual(Array.from(expected));
  });

  it("dual guidance (InstructPix2Pix) weighs image and text separately", () => {
    const full = td.tensor([4]);
    const image = td.tensor([2]);
    const none = td.tensor([1]);
    expect(new td.DualGuidance({ textScale: 2, imageScale: 3 }).combine([full, image, none]).toArray()).toEqual([1 + 3 * (2 - 1) + 2 * (4 - 2)]);
  });
});

describe("image I/O", () => {
  it("round-trips through PNG at 8-bit precision, RGB and gray", async () => {
    const image = td.rand([3, 5, 7], { generator: new td.Generator(0) });
    const back = await td.readImage(await td.encodePng(image));
    expect(back.shape).toEqual([1, 3, 5, 7]);
    expect(back.index(0).sub(image).abs().max().item()).toBeLessThanOrEqual(0.5 / 255 + 1e-6);
    const gray = await td.readImage(await td.encodePng(image), { channels: 1, width: 4, height: 3 });
    expect(gray.shape).toEqual([1, 1, 3, 4]);
  });

  it("tiles grids and reports corrupt files clearly", async () => {
    expect(td.imageGrid(td.zeros([5, 3, 4, 4]), 3).shape).toEqual([3, 8, 12]);
    await expect(td.readImage(Buffer.from("not an image"))).rejects.toThrow(/readImage\(<Buffer of 12 bytes>\): Input buffer contains unsupported image format/);
    await expect(td.readImage("/nonexistent.png")).rejects.toThrow(/readImage\("\/nonexistent.png"\): Input file is missing/);
  });
});
