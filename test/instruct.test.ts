import * as fs from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures } from "./helpers";
import { runCli } from "./helpers/cli";
import { settledTensorCount, tempDir } from "./helpers/training";

const tinySd = td.loadModel(path.join(fixtures, "models", "tiny-sd")); // latent: 4 channels, 16×16 images
const builtin = td.loadModel(path.join(__dirname, "..", "models", "builtin")); // pixel space: 1 channel, 32×32
const maxDiff = (a: td.Tensor, b: td.Tensor) => td.tidy(() => a.sub(b).abs().max().item());

describe("InstructPix2Pix", () => {
  it("zero-initialized extra input channels: the widened model predicts what the original does, for any image", () => {
    for (const [model, extra] of [[tinySd, 4], [builtin, 1]] as const) {
      const widened = td.widenInputChannels(model, extra);
      expect(widened.unet.config.in_channels).toBe(model.unet!.config.in_channels + extra);
      expect(model.unet!.module.namedParameters()["conv_in.weight"].shape[1]).toBe(model.unet!.config.in_channels); // the original is untouched
      td.tidy(() => {
        const g = new td.Generator(1);
        const [b, c, h, w] = model.latentShape(2);
        const x = td.randn([b, c, h, w], { generator: g });
        const image = td.randn([b, extra, h, w], { generator: g }).mul(3);
        const context = td.randn([b, 77, model.textEncoder!.config.hidden_size as number], { generator: g });
        td.noGrad(() => {
          const original = model.predictSync({ sample: x, timestep: 500, encoderHiddenStates: context });
          const wide = widened.predictSync({ sample: td.cat([x, image], 1), timestep: 500, encoderHiddenStates: context });
          expect(maxDiff(original, wide)).toBeLessThan(1e-5);
        });
      });
      const weight = widened.unet.namedParameters()["conv_in.weight"];
      expect(td.tidy(() => weight.narrow(1, model.unet!.config.in_channels, extra).abs().max().item())).toBe(0);
      expect(weight.isLeaf && weight.requiresGrad).toBe(true); // trainable, as InstructPix2Pix training needs
      widened.unet.dispose();
    }
  });

  it("dual guidance in one batched call of three equals three separate calls", async () => {
    const model = td.widenInputChannels(tinySd, 4);
    // Make the new channels matter, as after training.
    td.noGrad(() => td.tidy(() => {
      const w = model.unet.namedParameters()["conv_in.weight"];
      w.narrow(1, 4, 4).copy_(td.randn(w.narrow(1, 4, 4).shape, { generator: new td.Generator(5) }).mul(0.1));
    }));
    const pipe = new td.InstructPix2PixPipeline(model);
    const image = td.rand([1, 3, 16, 16], { generator: new td.Generator(2) });
    const o = { image, instruction: "make it a bag", guidanceScale: 3, imageGuidanceScale: 1.7, numInferenceSteps: 3, scheduler: model.newScheduler("DDIMScheduler") };
    const { images } = await pipe.edit({ ...o, generator: new td.Generator(0) });

    // The same, by hand: three predictions per step, combined with Eq. 3.
    const scheduler = model.newScheduler("DDIMScheduler");
    scheduler.setTimesteps(3);
    const condition = await pipe.imageConditioning(image);
    const text = await model.encodePrompt(["make it a bag"]);
    const empty = await model.encodePrompt([""]);
    let latents = td.randn(model.latentShape(1), { generator: new td.Generator(0) }).mul(scheduler.initNoiseSigma);
    for (const t of scheduler.timesteps) {
      latents = td.noGrad(() => td.tidy(() => {
        const input = scheduler.scaleModelInput(latents, t);
        const full = model.predictSync({ sample: td.cat([input, condition], 1), timestep: t, encoderHiddenStates: text });
        const imageOnly = model.predictSync({ sample: td.cat([input, condition], 1), timestep: t, encoderHiddenStates: empty });
        const none = model.predictSync({ sample: td.cat([input, td.zerosLike(condition)], 1), timestep: t, encoderHiddenStates: empty });
        const guided = none.add(imageOnly.sub(none).mul(1.7)).add(full.sub(imageOnly).mul(3));
        return td.keep(scheduler.step(guided, t, latents).prevSample);
      }));
    }
    const expected = await model.latentsToImages(latents);
    expect(maxDiff(images, expected)).toBeLessThan(1e-5);
    model.unet.dispose();
  });

  it("refuses models without image channels, bad options, and leaks nothing", async () => {
    expect(() => new td.InstructPix2PixPipeline(tinySd)).toThrow("InstructPix2PixPipeline: the U-Net takes 4 input channels; an image-conditioned model takes 8 (4 noisy + 4 image)");
    const model = td.widenInputChannels(builtin, 1);
    const pipe = new td.InstructPix2PixPipeline(model);
    const image = td.rand([1, 1, 32, 32], { generator: new td.Generator(3) });
    (await pipe.edit({ image, instruction: "make it a bag", numInferenceSteps: 2 })).images.dispose();
    const before = await settledTensorCount();
    const { images } = await pipe.edit({ image, instruction: ["make it a bag", "make it a coat"], numInferenceSteps: 2, generator: new td.Generator(0) });
    expect(images.shape).toEqual([2, 1, 32, 32]);
    images.dispose();
    await expect(pipe.edit({ image, instruction: [] })).rejects.toThrow("Expected string or non-empty array of strings for instruction but received array of length 0");
    const three = td.rand([3, 1, 32, 32]);
    await expect(pipe.edit({ image: three, instruction: ["a", "b"] })).rejects.toThrow("instruct: 3 images for 2 instructions (give 1 or as many of each)");
    three.dispose();
    await expect(pipe.edit({ image, instruction: "x", imageGuidanceScale: NaN })).rejects.toThrow("Expected number for imageGuidanceScale but received NaN of type number");
    expect(await settledTensorCount()).toBe(before);
    model.unet.dispose();
  });
});

describe("InstructPix2Pix training through fineTune", () => {
  /** A triplet folder from real Fashion-MNIST images: each input's edit is an image of another class. */
  async function tripletFolder(dir: string, count: number): Promise<string> {
    const data = new td.FashionMNIST({ split: "test", pad32: true });
    const writer = new td.EditTripletWriter(dir);
    for (let i = 0; i < count; i++) {
      const input = td.tidy(() => data.get(i).image.add(1).div(2));
      const edited = td.tidy(() => data.get(i + count).image.add(1).div(2));
      await writer.add({ input, edited, instruction: `make it ${td.fashionMnistCaption(data.label(i + count), "{a} {name}")}` });
      input.dispose();
      edited.dispose();
    }
    return dir;
  }
  const scratch = tempDir();
  const tripletsReady = tripletFolder(path.join(scratch, "triplets"), 8);

  it("trains the widened model on triplets with the paper's dropout, writes a loadable model, and resumes exactly", async () => {
    const triplets = new td.EditTripletDataset(await tripletsReady, { channels: 1 });
    const run = async (out: string, steps: number) => {
      const model = td.widenInputChannels(builtin, 1);
      try {
        return await td.fineTune(model, triplets, { out, steps, batchSize: 4, lr: 1e-3, conditioningDropout: 0.2, checkpointEvery: 2 });
      } finally {
        model.unet.dispose();
      }
    };
    const whole = await run(path.join(scratch, "whole"), 4);
    await run(path.join(scratch, "halves"), 2);
    const resumed = await run(path.join(scratch, "halves"), 4);
    expect(resumed.resumedFrom).toBe(2);
    expect(resumed.losses).toEqual(whole.losses);
    const trained = td.loadModel(path.join(scratch, "whole"));
    expect(trained.unet!.config.in_channels).toBe(2);
    const again = td.loadModel(path.join(scratch, "halves"));
    const [a, b] = [trained.unet!.namedParameters(), again.unet!.namedParameters()];
    for (const name of Object.keys(a)) expect(td.tidy(() => a[name].sub(b[name]).abs().max().item()), name).toBe(0);
    // The new channel's weights moved away from zero: the model now reads the input image.
    expect(td.tidy(() => a["conv_in.weight"].narrow(1, 1, 1).abs().max().item())).toBeGreaterThan(0);
    const record = JSON.parse(fs.readFileSync(path.join(scratch, "whole", "training.json"), "utf8"));
    expect(record).toMatchObject({ conditioningDropout: 0.2, inChannels: 2, steps: 4 });
    expect(record.captionDropout).toBeUndefined();
    const { images } = await new td.InstructPix2PixPipeline(trained).edit({ image: td.rand([1, 1, 32, 32]), instruction: "make it a bag", numInferenceSteps: 2 });
    expect(images.shape).toEqual([1, 1, 32, 32]);
    for (const m of [trained, again]) m.dispose();
  });

  it("drops the input image where the draw says (zeros, the ∅ image), and keeps it elsewhere", () => {
    td.tidy(() => {
      const sample = td.randn([4, 1, 2, 2]);
      const conditionImages = td.randn([4, 1, 2, 2]).add(5);
      const draws = [0.02, 0.07, 0.12, 0.5]; // p = 0.05: text only, both, image only, neither
      const input = td.imageConditionedInput(sample, { conditionImages, dropDraws: draws }, 0.05);
      expect(input.shape).toEqual([4, 2, 2, 2]);
      expect(input.narrow(1, 0, 1).sub(sample).abs().max().item()).toBe(0);
      const image = input.narrow(1, 1, 1);
      expect([0, 1, 2, 3].map((i) => image.index(i).abs().max().item() === 0)).toEqual([false, true, true, false]);
      expect(image.index(3).sub(conditionImages.index(3)).abs().max().item()).toBe(0);
    });
  });

  it("names the wrong model, data and options", async () => {
    const out = path.join(scratch, "bad");
    const triplets = new td.EditTripletDataset(await tripletsReady, { channels: 1 });
    await expect(td.fineTune(builtin, triplets, { out, steps: 1, conditioningDropout: 0.05 })).rejects.toThrow(
      "fineTune: options.conditioningDropout is for image-conditioned (InstructPix2Pix) models, and this U-Net takes 1 input channels, not 1 + 1 (see widenInputChannels)",
    );
    const model = td.widenInputChannels(builtin, 1);
    await expect(td.fineTune(model, triplets, { out, steps: 1, captionDropout: 0.1 })).rejects.toThrow("fineTune: options.captionDropout is for text-to-image models");
    await expect(td.fineTune(model, triplets, { out, steps: 1, conditioningDropout: 0.5 })).rejects.toThrow("fineTune options.conditioningDropout");
    await expect(td.fineTune(model, new td.FashionMNIST({ split: "test", pad32: true }), { out, steps: 1, batchSize: 2 })).rejects.toThrow("fineTune: sample");
    // A text-to-image method on an InstructPix2Pix model says what the model is.
    await expect(new td.Text2ImagePipeline(model).generate({ prompt: "a bag", numInferenceSteps: 1 })).rejects.toThrow(
      "U-Net takes 2 input channels but the sample has 1 (its extra 1 channels take an input image: an InstructPix2Pix model, edit with InstructPix2PixPipeline or torch-diffusion instruct)",
    );
    model.unet.dispose();
  });

  it("CLI: instruct edits an image with an InstructPix2Pix model, and refuses a text-to-image one", async () => {
    const input = path.join(scratch, "in.png");
    await td.writeImage(td.rand([1, 32, 32], { generator: new td.Generator(4) }), input);
    const model = path.join(scratch, "whole");
    const out = path.join(scratch, "edited.png");
    const ok = await runCli(["instruct", "--model", model, "--image", input, "--instruction", "make it a bag", "--steps", "2", "--image-guidance", "1.2", "--guidance", "3", "--seed", "1", "--json", "--out", out]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ command: "instruct", images: [out], prompt: "make it a bag", imageGuidanceScale: 1.2, guidanceScale: 3, stepsRun: 2 });
    expect(fs.existsSync(out)).toBe(true);
    const interval = await runCli(["instruct", "--model", model, "--image", input, "--instruction", "make it a bag", "--steps", "2", "--guidance-interval", "0,500", "--seed", "1", "--json", "--out", out]);
    expect(interval.stderr).toMatch(/^instruct: 1 image 32×32, 2 steps of \w+, seed 1, guidance [\d.]+ on timesteps 0–500, [\d.]+ s\n$/);
    expect(JSON.parse(interval.stdout)).toMatchObject({ guidanceInterval: [0, 500] });
    const refused = await runCli(["instruct", "--model", "builtin", "--image", input, "--instruction", "make it a bag", "--out", out]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("--model: InstructPix2PixPipeline: the U-Net takes 1 input channels");
    const missing = await runCli(["instruct", "--image", input, "--out", out]);
    expect(missing.stderr).toContain("--instruction");
  });
});
