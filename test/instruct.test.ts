import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures } from "./helpers";
import { settledTensorCount } from "./helpers/training";

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
