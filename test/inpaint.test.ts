import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures } from "./helpers";

const model = td.loadModel(path.join(fixtures, "models", "tiny-sd"));
const pipe = new td.InpaintPipeline(model);
const ddim = () => model.newScheduler("DDIMScheduler");
const euler = () => model.newScheduler("EulerDiscreteScheduler");

const input = td.keep(td.rand([1, 3, 16, 16], { generator: new td.Generator(9) }));
// Repaint the right half, keep the left half.
const rightHalf = td.keep(td.cat([td.zeros([1, 1, 16, 8]), td.ones([1, 1, 16, 8])], 3)); // (1, 1, 16, 16)
const base = { image: input, mask: rightHalf, prompt: "a red sneaker", numInferenceSteps: 4 };

const values = (t: td.Tensor) => Array.from(t.toFloat32Array());
const half = (t: td.Tensor, side: "left" | "right") => t.narrow(3, side === "left" ? 0 : 8, 8);
const maxDiff = (a: td.Tensor, b: td.Tensor) => a.sub(b).abs().max().item();
/** Lets GC finalizers free the handles earlier tests dropped, so a baseline stays put. */
async function settle(): Promise<void> {
  for (let i = 0; i < 2; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

describe("InpaintPipeline on a latent model (blend mode)", () => {
  it("keeps the known region exactly, repaints the masked one, deterministic per seed", async () => {
    expect(pipe.mode).toBe("blend");
    const a = await pipe.inpaint({ ...base, scheduler: ddim(), generator: new td.Generator(1) });
    const b = await pipe.inpaint({ ...base, scheduler: ddim(), generator: new td.Generator(1) });
    const c = await pipe.inpaint({ ...base, scheduler: ddim(), generator: new td.Generator(2) });
    expect(a.images.shape).toEqual([1, 3, 16, 16]);
    expect(a.images.min().item()).toBeGreaterThanOrEqual(0);
    expect(a.images.max().item()).toBeLessThanOrEqual(1);
    expect(values(half(a.images, "left"))).toEqual(values(half(input, "left")));
    expect(maxDiff(half(a.images, "right"), half(input, "right"))).toBeGreaterThan(1e-3);
    expect(values(a.images)).toEqual(values(b.images));
    expect(maxDiff(a.images, c.images)).toBeGreaterThan(1e-4);
  });

  it("pasteBack: false leaves the VAE's rendering of the known region", async () => {
    const { images } = await pipe.inpaint({ ...base, pasteBack: false, scheduler: ddim(), generator: new td.Generator(1) });
    expect(maxDiff(half(images, "left"), half(input, "left"))).toBeGreaterThan(1e-4);
  });

  it("batches prompts × images per prompt, reads files and Buffers, takes sigma schedulers", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "td-inpaint-"));
    const file = path.join(dir, "image.png");
    await td.writeImage(input.index(0), file);
    const maskPng = await td.encodePng(rightHalf.index(0));
    const { images } = await pipe.inpaint({ ...base, image: file, mask: maskPng, prompt: ["a bag", "a coat"], negativePrompt: ["blurry", "dark"], numImagesPerPrompt: 2, strength: 0.75, scheduler: euler(), generator: new td.Generator(0) });
    expect(images.shape).toEqual([4, 3, 16, 16]);
    const fromFile = await td.readImage(file);
    for (let i = 0; i < 4; i++) expect(values(half(images.narrow(0, i, 1), "left"))).toEqual(values(half(fromFile, "left")));
  });

  it("a mask of zeros (or strength 0) returns the input; a mask of ones runs like text-to-image", async () => {
    const zeros = await pipe.inpaint({ ...base, mask: td.zeros([16, 16]), scheduler: ddim() });
    expect(values(zeros.images)).toEqual(values(input));
    const none = await pipe.inpaint({ ...base, strength: 0, scheduler: ddim() });
    expect(values(none.images)).toEqual(values(input));
    const steps: number[] = [];
    const ones = await pipe.inpaint({ ...base, mask: td.ones([1, 16, 16]), scheduler: ddim(), generator: new td.Generator(3), onProgress: ({ step }) => steps.push(step) });
    expect(steps).toEqual([1, 2, 3, 4]);
    expect(ones.images.shape).toEqual([1, 3, 16, 16]);
    expect(maxDiff(ones.images, input)).toBeGreaterThan(1e-3);
  });

  it("rejects masks of the wrong shape or size, and bad options, clearly", async () => {
    await expect(pipe.inpaint({ ...base, mask: td.ones([1, 1, 8, 8]) })).rejects.toThrow("inpaint mask: expected 16×16 (the image's size) but the mask is 8×8");
    await expect(pipe.inpaint({ ...base, mask: td.ones([1, 3, 16, 16]) })).rejects.toThrow("inpaint mask: expected a tensor [H, W], [1, H, W] or [B, 1, H, W] but received shape [1, 3, 16, 16]");
    await expect(pipe.inpaint({ ...base, mask: td.ones([16]) })).rejects.toThrow("inpaint mask: expected a tensor [H, W], [1, H, W] or [B, 1, H, W] but received shape [16]");
    await expect(pipe.inpaint({ ...base, mask: td.ones([3, 1, 16, 16]) })).rejects.toThrow("inpaint: 3 masks for 1 prompts (give 1 or one per prompt)");
    await expect(pipe.inpaint({ ...base, mask: Buffer.from("not a png") })).rejects.toThrow(/readImage\(<Buffer of 9 bytes>\)/);
    await expect(pipe.inpaint({ ...base, image: td.rand([1, 3, 15, 16]) })).rejects.toThrow("inpaint image: height and width must be multiples of 2 but the image is 15×16");
    await expect(pipe.inpaint({ ...base, strength: 2 })).rejects.toThrow("Expected number in [0, 1] for strength but received 2 of type number");
    await expect(pipe.inpaint({ ...base, pasteBack: "yes" as unknown as boolean })).rejects.toThrow('Expected boolean for pasteBack but received "yes" of type string');
  });

  it("leaks no tensors, and abort stops within one step and leaks nothing", async () => {
    const scheduler = ddim();
    const badMask = td.ones([2, 2]);
    (await pipe.inpaint({ ...base, scheduler })).images.dispose();
    await settle();
    const before = td.memory().numTensors;
    (await pipe.inpaint({ ...base, scheduler, generator: new td.Generator(0) })).images.dispose();
    expect(td.memory().numTensors).toBe(before);
    await expect(pipe.inpaint({ ...base, mask: badMask })).rejects.toThrow();
    expect(td.memory().numTensors).toBe(before);

    const controller = new AbortController();
    const steps: number[] = [];
    const run = pipe.inpaint({ ...base, numInferenceSteps: 10, scheduler, signal: controller.signal, onProgress: ({ step }) => { steps.push(step); if (step === 2) controller.abort(); } });
    await expect(run).rejects.toThrow("The operation was aborted");
    expect(steps).toEqual([1, 2]);
    expect(td.memory().numTensors).toBe(before);
  });
});

describe("InpaintPipeline on a pixel-space model", () => {
  // The tiny UNet denoises 4 channels: without a VAE it is a pixel model of 4-channel images.
  const pixel = new td.InpaintPipeline(model.with({ vae: undefined }));
  const image = td.keep(td.rand([1, 4, 8, 8], { generator: new td.Generator(5) }));
  const mask = td.keep(td.cat([td.zeros([1, 1, 8, 4]), td.ones([1, 1, 8, 4])], 3)); // (1, 1, 8, 8)

  for (const [name, scheduler] of [["DDIM", ddim], ["Euler", euler]] as const) {
    it(`blends the clean known region back after the last step (${name})`, async () => {
      let last: number[] = [];
      const { images } = await pixel.inpaint({ image, mask, prompt: "x", numInferenceSteps: 3, scheduler: scheduler(), generator: new td.Generator(0), onProgress: ({ latents }) => { last = values(latents.narrow(3, 0, 4)); } });
      const clean = image.mul(2).sub(1).narrow(3, 0, 4); // the known half in model space
      expect(last).toEqual(values(clean));
      expect(values(images.narrow(3, 0, 4))).toEqual(values(image.narrow(3, 0, 4)));
      expect(maxDiff(images.narrow(3, 4, 4), image.narrow(3, 4, 4))).toBeGreaterThan(1e-3);
    });
  }
});

describe("InpaintPipeline on an inpainting UNet (concat mode)", () => {
  // A stand-in 9-channel UNet: it records its inputs and runs the tiny 4-channel UNet on the latents.
  const unet = model.unet!;
  const seen: { shape: number[]; extra: number[] }[] = [];
  const inpaintingUnet = Object.create(unet, {
    config: { value: { ...unet.config, in_channels: 9 } },
    device: { value: unet.device },
    forward: {
      value: (args: td.UNetForwardArgs) => {
        seen.push({ shape: args.sample.shape, extra: values(args.sample.narrow(1, 4, 1)) });
        return unet.forward({ ...args, sample: args.sample.narrow(1, 0, 4) });
      },
    },
  }) as td.UNet2DConditionModel;
  const concat = new td.InpaintPipeline(model.with({ unet: inpaintingUnet }));

  it("feeds [latents, mask, masked-image latents] to the UNet and pastes back", async () => {
    expect(concat.mode).toBe("concat");
    seen.length = 0;
    const { images } = await concat.inpaint({ ...base, numInferenceSteps: 2, scheduler: ddim(), generator: new td.Generator(0) });
    expect(seen.map((s) => s.shape)).toEqual([[2, 9, 8, 8], [2, 9, 8, 8]]); // CFG: (2·B, 4 + 1 + 4, h, w)
    const latentMask = values(td.cat([td.zeros([2, 1, 8, 4]), td.ones([2, 1, 8, 4])], 3));
    expect(seen[0].extra).toEqual(latentMask);
    expect(values(half(images, "left"))).toEqual(values(half(input, "left")));
  });

  it("rejects UNets of other widths", () => {
    const odd = Object.create(unet, { config: { value: { ...unet.config, in_channels: 5 } } }) as td.UNet2DConditionModel;
    expect(() => new td.InpaintPipeline(model.with({ unet: odd }))).toThrow("InpaintPipeline: the UNet takes 5 input channels; expected 4 (a plain model) or 9 (an inpainting model) for 4 latent channels");
  });
});
