import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import * as td from "../lib";
import { fixtures } from "./helpers";
import { runCli } from "./helpers/cli";

const builtin = td.loadModel("builtin");
const tinySd = td.loadModel(path.join(fixtures, "models", "tiny-sd"));
const tokenizer = builtin.tokenizer!; // the built-in model's cut-down CLIP vocabulary, 24 tokens
const T = tokenizer.modelMaxLength;
const pipe = new td.PromptToPromptPipeline(builtin);
const text2img = new td.Text2ImagePipeline(builtin);

const bits = (t: td.Tensor) => Buffer.from(t.toFloat32Array().buffer);
const sameBits = (a: td.Tensor, b: td.Tensor) => a.shape.join() === b.shape.join() && bits(a).equals(bits(b));
const maxDiff = (a: td.Tensor, b: td.Tensor) => td.tidy(() => a.sub(b).abs().max().item());
const row = (t: td.Tensor, i: number) => t.narrow(0, i, 1);
/** The nonzero entries of a T × T map as "row,col=value". */
const entries = (w: Float32Array) => Array.from(w).flatMap((v, k) => (v === 0 ? [] : [`${Math.floor(k / T)},${k % T}=${+v.toFixed(4)}`]));
/** Position-to-position entries from (i0, j0) on, while both are inside T. */
const diagonal = (i0: number, j0: number) => Array.from({ length: Math.min(T - i0, T - j0) }, (_, d) => `${i0 + d},${j0 + d}=1`);

describe("forward_attention_control", () => {
  for (const [name, model, steps] of [["the built-in model", builtin, 4], ["the tiny SD fixture", tinySd, 4]] as const) {
    it(`equals forward without replacements and records every cross-attention layer (${name})`, async () => {
      const unet = model.unet!;
      expect(unet.hasAttentionControl).toBe(true);
      await td.tidyAsync(async () => {
        const context = await model.encodePrompt(["a photo of a shirt", ""]); // (2, T, D)
        const sample = td.randn(model.latentShape(2), { generator: new td.Generator(1) });
        for (const timestep of [999, 500, 1]) {
          const plain = await td.noGradAsync(() => unet.forward({ sample, timestep, encoderHiddenStates: context }));
          const { sample: controlled, attentionProbs } = await td.noGradAsync(() => unet.forwardAttentionControl({ sample, timestep, encoderHiddenStates: context, replacements: [] }));
          expect(sameBits(controlled, plain)).toBe(true);
          expect(attentionProbs.length).toBe(steps);
          for (const probs of attentionProbs) {
            expect(probs.dtype).toBe("float32");
            expect(probs.shape[0]).toBe(2);
            expect(probs.shape[3]).toBe(context.shape[1]);
            expect(maxDiff(probs.sum(-1), td.onesLike(probs.sum(-1)))).toBeLessThan(1e-5); // softmax rows
          }
          // Its own maps given back as replacements: the same prediction.
          const replaced = await td.noGradAsync(() => unet.forwardAttentionControl({ sample, timestep, encoderHiddenStates: context, replacements: attentionProbs }));
          expect(sameBits(replaced.sample, plain)).toBe(true);
        }
      });
    });
  }

  it("rejects replacements of the wrong count or shape in one line", async () => {
    const unet = builtin.unet!;
    await td.tidyAsync(async () => {
      const context = await builtin.encodePrompt(["a photo of a bag"]);
      const sample = td.randn(builtin.latentShape(1), { generator: new td.Generator(2) });
      const { attentionProbs } = await unet.forwardAttentionControl({ sample, timestep: 500, encoderHiddenStates: context });
      await expect(unet.forwardAttentionControl({ sample, timestep: 500, encoderHiddenStates: context, replacements: attentionProbs.slice(1) })).rejects.toThrow(/3 replacements for 4 cross-attention layers/);
      const wrong = attentionProbs.map((p) => p.narrow(3, 0, 3));
      await expect(unet.forwardAttentionControl({ sample, timestep: 500, encoderHiddenStates: context, replacements: wrong })).rejects.toThrow(/replacement 0 has shape/);
    });
  });
});

describe("token maps (hand-worked on the built-in tokenizer)", () => {
  // shirt, dress, red, bag: 1 token; sneaker, sandal, striped: 2; pullover: 3 (pul|lo|ver)
  it("splits prompts into words and their token positions", () => {
    expect(td.wordTokens(tokenizer, "a photo of a pullover")).toEqual([
      { word: "a", start: 1, end: 2 }, { word: "photo", start: 2, end: 3 }, { word: "of", start: 3, end: 4 }, { word: "a", start: 4, end: 5 }, { word: "pullover", start: 5, end: 8 },
    ]);
  });

  it("word swap: token for token when the counts match", () => {
    const w = td.wordSwapMapper(tokenizer, "a photo of a sneaker", "a photo of a sandal");
    expect(entries(w)).toEqual(diagonal(0, 0));
  });

  it("word swap: one token becoming three gives each a third; the rest follows in step", () => {
    const w = td.wordSwapMapper(tokenizer, "a photo of a shirt", "a photo of a pullover");
    // source: <s> a photo of a shirt </s> ...; target: <s> a photo of a pul lo ver </s> ...
    expect(entries(w)).toEqual([...diagonal(0, 0).slice(0, 5), "5,5=0.3333", "5,6=0.3333", "5,7=0.3333", ...diagonal(6, 8)]);
  });

  it("word swap: three tokens becoming one sum into it", () => {
    const w = td.wordSwapMapper(tokenizer, "a photo of a pullover", "a photo of a shirt");
    const expected = [...diagonal(0, 0).slice(0, 5), "5,5=1", "6,5=1", "7,5=1", ...diagonal(8, 6)].sort();
    expect(entries(w).sort()).toEqual(expected);
  });

  it("word swap: words after a swapped word whose count changed stay aligned (the reference's mapper[j, j] would not)", () => {
    // source: <s> a stri ped shirt </s>; target: <s> a red shirt </s>
    const w = td.wordSwapMapper(tokenizer, "a striped shirt", "a red shirt");
    expect(entries(w).sort()).toEqual(["0,0=1", "1,1=1", "2,2=1", "3,2=1", ...diagonal(4, 3)].sort());
    expect(() => td.wordSwapMapper(tokenizer, "a shirt", "a red shirt")).toThrow(/same number of words.*"refine"/);
  });

  it("refinement: shared tokens aligned, added words keep their own attention", () => {
    const one = td.refinementAlignment(tokenizer, "a photo of a shirt", "a photo of a red shirt");
    expect(Array.from(one.mapper).slice(0, 10)).toEqual([0, 1, 2, 3, 4, -1, 5, 6, 8, 9]);
    expect(Array.from(one.alphas).slice(0, 8)).toEqual([1, 1, 1, 1, 1, 0, 1, 1]);
    // an added word of two tokens (stri|ped) before a kept word
    const two = td.refinementAlignment(tokenizer, "a shirt", "a striped shirt");
    expect(Array.from(two.mapper).slice(0, 8)).toEqual([0, 1, -1, -1, 2, 3, 6, 7]);
    const edit = td.crossAttentionEdit(tokenizer, "a shirt", "a striped shirt", { mode: "refine" });
    expect(entries(edit.weights).slice(0, 4)).toEqual(["0,0=1", "1,1=1", "2,4=1", "3,5=1"]);
    expect(Array.from(edit.ownWeight).slice(0, 6)).toEqual([0, 0, 1, 1, 0, 0]);
  });

  it("re-weighting scales the target's columns of the word's tokens", () => {
    const { scales, found } = td.reweightScales(tokenizer, "a photo of a (Striped, shirt", [{ word: "striped", scale: 2 }, { word: "dress", scale: 3 }]);
    expect(Array.from(scales).slice(0, 10)).toEqual([1, 1, 1, 1, 1, 1, 2, 2, 1, 1]); // <s> a photo of a ( stri ped , shirt
    expect(found).toEqual([true, false]);
    const edit = td.crossAttentionEdit(tokenizer, "a photo of a shirt", "a photo of a dress", { mode: "replace", scales: td.reweightScales(tokenizer, "a photo of a dress", [{ word: "dress", scale: -1 }]).scales });
    expect(entries(edit.weights).slice(0, 7)).toEqual(["0,0=1", "1,1=1", "2,2=1", "3,3=1", "4,4=1", "5,5=-1", "6,6=1"]);
  });
});

describe("PromptToPromptPipeline on the built-in model", () => {
  const steps = 6;
  const sources = ["a photo of a shirt", "a photo of a sneaker"];
  const swapped = ["a photo of a dress", "a photo of a sneaker"]; // pair 1 unchanged

  it("the source is text2img's image; τ = 0 makes the target text2img's image of the target (recording changes nothing)", async () => {
    const common = { numInferenceSteps: steps, numImagesPerPrompt: 2 };
    const { source, target } = await pipe.generate({ prompt: sources, target: swapped, crossReplace: 0, ...common, generator: new td.Generator(3) });
    const { images: plainSource } = await text2img.generate({ prompt: sources, ...common, generator: new td.Generator(3) });
    const { images: plainTarget } = await text2img.generate({ prompt: swapped, ...common, generator: new td.Generator(3) });
    expect(source.shape).toEqual([4, 1, 32, 32]);
    expect(sameBits(source, plainSource)).toBe(true);
    expect(sameBits(target, plainTarget)).toBe(true);
    for (const t of [source, target, plainSource, plainTarget]) t.dispose();
  });

  it("τ = 1 with identical prompts reproduces the source bit for bit, also with stochastic steps (η = 1)", async () => {
    for (const eta of [0, 1]) {
      const { source, target } = await pipe.generate({ prompt: sources, target: swapped, crossReplace: 1, numInferenceSteps: steps, eta, generator: new td.Generator(4) });
      const { images: plain } = await text2img.generate({ prompt: sources, numInferenceSteps: steps, eta, generator: new td.Generator(4) });
      expect(sameBits(source, plain)).toBe(true);
      expect(sameBits(row(target, 1), row(source, 1))).toBe(true); // sneaker → sneaker
      expect(maxDiff(row(target, 0), row(source, 0))).toBeGreaterThan(1e-2); // shirt → dress
      for (const t of [source, target, plain]) t.dispose();
    }
  });

  it("with a guidance interval the source is still text2img's image, and identical prompts at τ = 1 still reproduce it", async () => {
    const guidanceInterval: [number, number] = [300, 800]; // of DDIM's 999, 832, 666, 499, 332, 166: the middle three guided
    const { source, target } = await pipe.generate({ prompt: sources, target: swapped, crossReplace: 1, numInferenceSteps: steps, guidanceInterval, generator: new td.Generator(5) });
    const { images: plain } = await text2img.generate({ prompt: sources, numInferenceSteps: steps, guidanceInterval, generator: new td.Generator(5) });
    const { images: everyStep } = await text2img.generate({ prompt: sources, numInferenceSteps: steps, generator: new td.Generator(5) });
    expect(sameBits(source, plain)).toBe(true);
    expect(maxDiff(plain, everyStep)).toBeGreaterThan(1e-3);
    expect(sameBits(row(target, 1), row(source, 1))).toBe(true); // sneaker → sneaker
    expect(maxDiff(row(target, 0), row(source, 0))).toBeGreaterThan(1e-2); // shirt → dress
    for (const t of [source, target, plain, everyStep]) t.dispose();
  });

  it("word swap at τ = 0.8 differs from the source and from the independently drawn target; re-weighting by 1 changes nothing", async () => {
    const options = { prompt: sources[0], target: swapped[0], crossReplace: 0.8, numInferenceSteps: steps, generator: new td.Generator(5) } as const;
    const { source, target } = await pipe.generate(options);
    const { images: independent } = await text2img.generate({ prompt: swapped[0], numInferenceSteps: steps, generator: new td.Generator(5) });
    expect(maxDiff(target, source)).toBeGreaterThan(1e-2);
    expect(maxDiff(target, independent)).toBeGreaterThan(1e-2);
    const unit = await pipe.generate({ ...options, generator: new td.Generator(5), reweight: [{ word: "dress", scale: 1 }] });
    expect(sameBits(unit.target, target)).toBe(true);
    const doubled = await pipe.generate({ ...options, generator: new td.Generator(5), reweight: [{ word: "dress", scale: 2 }] });
    expect(maxDiff(doubled.target, target)).toBeGreaterThan(1e-3);
    for (const t of [source, target, independent, unit.source, unit.target, doubled.source, doubled.target]) t.dispose();
  });

  it("refinement (the default for prompts that add words) keeps the source's layout closer than an independent draw", async () => {
    const options = { prompt: "a photo of a shirt", target: "a photo of a striped shirt", numInferenceSteps: steps, generator: new td.Generator(6) };
    const { source, target } = await pipe.generate(options);
    const { images: independent } = await text2img.generate({ prompt: options.target, numInferenceSteps: steps, generator: new td.Generator(6) });
    expect(maxDiff(target, independent)).toBeGreaterThan(1e-3);
    const distance = (a: td.Tensor, b: td.Tensor) => td.tidy(() => a.sub(b).abs().mean().item());
    expect(distance(target, source)).toBeLessThan(distance(independent, source));
    for (const t of [source, target, independent]) t.dispose();
  });

  it("rejects bad options with a message naming them", async () => {
    const base = { prompt: "a photo of a shirt", target: "a photo of a dress", numInferenceSteps: 2 };
    await expect(pipe.generate({ ...base, prompt: sources })).rejects.toThrow("generate: 2 prompts but 1 targets: give one target per prompt");
    await expect(pipe.generate({ ...base, crossReplace: 1.5 })).rejects.toThrow("Expected number in [0, 1] for crossReplace but received 1.5 of type number");
    await expect(pipe.generate({ ...base, crossReplace: -0.1 })).rejects.toThrow(/for crossReplace/);
    await expect(pipe.generate({ ...base, reweight: [{ word: "sneaker", scale: 2 }] })).rejects.toThrow('generate: reweight word "sneaker" is not a word of the target "a photo of a dress"');
    await expect(pipe.generate({ ...base, reweight: [{ word: "red dress", scale: 2 }] })).rejects.toThrow(/reweight\[0\]\.word/);
    await expect(pipe.generate({ ...base, target: "a photo of a red dress", mode: "replace" })).rejects.toThrow(/mode "replace" \(word swap\) needs prompts with the same number of words.*use mode "refine"/);
    await expect(pipe.generate({ ...base, mode: "swap" as never })).rejects.toThrow("Expected one of replace, refine for mode");
  });

  it("refuses a U-Net exported without the method, saying how to get one", () => {
    const module = td.load(path.join(fixtures, "modules", "tiny_conv.pt"));
    const old = new td.UNet2DConditionModel(module, builtin.unet!.config as Record<string, unknown>);
    expect(() => new td.PromptToPromptPipeline(builtin.with({ unet: old }))).toThrow(/exported without forward_attention_control.*re-export it with torch-diffusion convert/);
    module.dispose();
  });
});

describe("torch-diffusion p2p", () => {
  it("writes the pair side by side, and the images on their own", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "p2p-"));
    try {
      const out = path.join(dir, "pair.png");
      const args = ["p2p", "--prompt", "a photo of a shirt", "--target", "a photo of a dress", "--steps", "3", "--seed", "0", "--out", out, "--out-target", path.join(dir, "dress.png"), "--json"];
      const { code, stdout, stderr } = await runCli(args);
      expect(stderr).toMatch(/p2p: 1 pair 32×32, word swap, cross-attention from the source for 2 of 3 steps/);
      expect(code).toBe(0);
      const result = JSON.parse(stdout);
      expect(result).toMatchObject({ command: "p2p", pairs: [out], target: [path.join(dir, "dress.png")], mode: "replace", crossReplace: 0.8, seed: 0 });
      const pair = await td.readImage(out, { channels: 1 });
      expect(pair.shape).toEqual([1, 1, 32, 64]);
      pair.dispose();
      const bad = await runCli(["p2p", "--prompt", "a shirt", "--target", "a red shirt", "--mode", "replace", "--cross-replace", "0.5"]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toBe("torch-diffusion: --mode replace (word swap) needs --prompt and --target with the same number of words (2 and 3): use --mode refine\n");
      const range = await runCli(["p2p", "--prompt", "a shirt", "--target", "a dress", "--cross-replace", "2"]);
      expect(range.stderr).toBe('torch-diffusion: --cross-replace: expected a number in [0, 1] but got "2"\n');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
