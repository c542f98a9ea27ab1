/**
 * What the commands hand back: `--json` objects for scripts (one per command, on stdout, with
 * notes still on stderr), a model's recommended defaults used unless the caller gives values
 * (command line and pipelines), and one training record per trained model.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as td from "../lib";
import { runCli, type CliResult as Result } from "./helpers/cli";
import { fixtures } from "./helpers";

const tinySd = path.join(fixtures, "models", "tiny-sd"); // latent, 16×16 RGB, PNDM, no defaults
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-cli-results-"));
const file = (name: string) => path.join(tmp, name);
const tiny = ["--model", tinySd, "--steps", "2", "--seed", "1", "--scheduler", "ddim"];
const timing = expect.any(Number);

const cli = (args: string[]) => runCli(args);

/** The one JSON object a --json run printed (and nothing else on stdout). */
function json(result: Result): Record<string, unknown> {
  expect(result.code, result.stderr).toBe(0);
  const lines = result.stdout.trim().split("\n");
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

/** A copy of the tiny SD fixture whose model_index.json recommends `defaults`. */
function withDefaults(name: string, defaults: unknown): string {
  const dir = file(name);
  fs.cpSync(tinySd, dir, { recursive: true });
  const indexFile = path.join(dir, "model_index.json");
  const index = JSON.parse(fs.readFileSync(indexFile, "utf8"));
  index.torch_diffusion.defaults = defaults;
  fs.writeFileSync(indexFile, JSON.stringify(index, null, 2));
  return dir;
}

beforeAll(async () => {
  await td.writeImage(td.rand([3, 16, 16], { generator: new td.Generator(0) }), file("input.png"));
  await td.writeImage(td.cat([td.zeros([1, 16, 8]), td.ones([1, 16, 8])], 2), file("mask.png"));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("--json", () => {
  it("generate: the written files, seed, steps, scheduler, guidance, size and timings; the summary stays on stderr", async () => {
    const result = await cli(["generate", ...tiny, "--prompt", "a cat", "--batch", "2", "--grid", file("grid.png"), "--out", file("gen.png"), "--json"]);
    expect(json(result)).toEqual({
      command: "generate", model: tinySd, images: [file("gen-0.png"), file("gen-1.png")], grid: file("grid.png"), prompt: "a cat", negativePrompt: null,
      seed: 1, steps: 2, stepsRun: 2, scheduler: "DDIMScheduler", guidanceScale: 7.5, guidanceInterval: null, width: 16, height: 16,
      timings: { load: timing, run: timing, write: timing, total: timing },
    });
    expect(result.stderr).toMatch(/^generate: 2 images 16×16, 2 steps of DDIMScheduler, seed 1, guidance 7\.5, [\d.]+ s\n$/);
    for (const name of ["gen-0.png", "gen-1.png", "grid.png"]) expect(fs.existsSync(file(name))).toBe(true);
  });

  it("edit (SDEdit and DiffEdit) and inpaint add their inputs and strength", async () => {
    const sdedit = json(await cli(["edit", ...tiny, "--prompt", "a bag", "--image", file("input.png"), "--strength", "0.5", "--out", file("edit.png"), "--json"]));
    expect(sdedit).toMatchObject({ command: "edit", method: "sdedit", input: file("input.png"), strength: 0.5, images: [file("edit.png")], grid: null, steps: 2, stepsRun: 1, scheduler: "DDIMScheduler" });
    const diffedit = json(await cli([
      "edit", "--method", "diffedit", "--model", tinySd, "--steps", "2", "--seed", "1", "--image", file("input.png"), "--source-prompt", "a bag", "--prompt", "a cat",
      "--mask-out", file("mask-out.png"), "--out", file("diffedit.png"), "--json",
    ]));
    expect(diffedit).toMatchObject({
      command: "edit", method: "diffedit", sourcePrompt: "a bag", prompt: "a cat", images: [file("diffedit.png")], mask: null, maskOut: file("mask-out.png"),
      scheduler: "DDIMScheduler", steps: 2, strength: 0.8, maskDraws: expect.any(Number), inversionSteps: expect.any(Number), timings: { load: timing, run: timing, write: timing, total: timing },
    });
    expect(fs.existsSync(file("mask-out.png"))).toBe(true);
    const inpaint = json(await cli(["inpaint", ...tiny, "--prompt", "a coat", "--image", file("input.png"), "--mask", file("mask.png"), "--out", file("inpaint.png"), "--json"]));
    expect(inpaint).toMatchObject({ command: "inpaint", input: file("input.png"), mask: file("mask.png"), strength: 1, images: [file("inpaint.png")], steps: 2 });
  });

  it("imagic: one image per η and the stages' timings", async () => {
    const out = file("imagic");
    const result = json(await cli([
      "imagic", "--model", tinySd, "--image", file("input.png"), "--prompt", "a dress", "--out", out, "--eta", "0.7",
      "--embedding-steps", "1", "--train-steps", "1", "--steps", "2", "--json",
    ]));
    expect(result).toEqual({
      command: "imagic", model: tinySd, out, images: [path.join(out, "eta-0.70.png")], etas: [0.7], input: file("input.png"), prompt: "a dress", seed: 0,
      steps: 2, scheduler: "PNDMScheduler", guidanceScale: 7.5, timings: { load: timing, optimize: timing, generate: timing, total: timing },
    });
  });
});

describe("a model's recommended defaults", () => {
  it("the built-in model's (guidance 2 on timesteps 200–900, 20 DPM-Solver++ steps) apply unless given; given values win", async () => {
    const byDefault = json(await cli(["generate", "a photo of a bag", "--seed", "0", "--out", file("builtin.png"), "--json"]));
    expect(byDefault).toMatchObject({ model: td.builtinModelPath(), steps: 20, stepsRun: 20, guidanceScale: 2, scheduler: "DPMSolverMultistepScheduler", guidanceInterval: [200, 900] });
    const given = json(await cli(["generate", "a photo of a bag", "--seed", "0", "--steps", "3", "--guidance", "1", "--scheduler", "euler", "--out", file("given.png"), "--json"]));
    expect(given).toMatchObject({ steps: 3, stepsRun: 3, guidanceScale: 1, scheduler: "EulerDiscreteScheduler" });
    // --guidance-interval: the same interval given is the default's image; all guides every step.
    const same = await cli(["generate", "a photo of a bag", "--seed", "0", "--guidance-interval", "200,900", "--out", file("same.png")]);
    expect(same.stderr).toMatch(/^generate: 1 image 32×32, 20 steps of DPMSolverMultistepScheduler, seed 0, guidance 2 on timesteps 200–900, [\d.]+ s\n$/);
    const all = json(await cli(["generate", "a photo of a bag", "--seed", "0", "--guidance-interval", "all", "--out", file("all.png"), "--json"]));
    expect(all).toMatchObject({ guidanceScale: 2, guidanceInterval: null });
    const pixels = async (name: string) => {
      const image = await td.readImage(file(name));
      const values = Array.from(image.toFloat32Array());
      image.dispose();
      return values;
    };
    expect(await pixels("same.png")).toEqual(await pixels("builtin.png"));
    expect(await pixels("all.png")).not.toEqual(await pixels("builtin.png"));
    // edit (SDEdit) and inpaint report and take it the same way.
    const input = file("builtin-input.png");
    await td.writeImage(td.rand([1, 32, 32], { generator: new td.Generator(1) }), input);
    const maskFile = file("builtin-mask.png");
    await td.writeImage(td.cat([td.zeros([1, 32, 16]), td.ones([1, 32, 16])], 2), maskFile);
    for (const [command, extra] of [["edit", []], ["inpaint", ["--mask", maskFile]]] as const) {
      const args = [command, "--prompt", "a photo of a bag", "--image", input, ...extra, "--seed", "0", "--json"];
      const recommended = json(await cli([...args, "--out", file(`${command}-recommended.png`)]));
      expect(recommended, command).toMatchObject({ guidanceScale: 2, guidanceInterval: [200, 900] });
      const every = await cli([...args.slice(0, -1), "--guidance-interval", "all", "--out", file(`${command}-all.png`)]);
      expect(every.stderr, command).toMatch(new RegExp(`^${command}: 1 image 32×32, \\d+ steps of DPMSolverMultistepScheduler, seed 0, guidance 2, [\\d.]+ s\\n$`));
      expect(await pixels(`${command}-all.png`), command).not.toEqual(await pixels(`${command}-recommended.png`));
    }
    for (const bad of ["900,200", "200", "a,b", "200,900,1000"]) {
      expect(await cli(["generate", "x", "--guidance-interval", bad])).toEqual({ code: 1, stdout: "", stderr: `torch-diffusion: --guidance-interval: expected LOW,HIGH timesteps with LOW ≤ HIGH, or all but got "${bad}"\n` });
    }
  });

  it("loadModel reads them into model.defaults (scheduler included); pipelines use them when a call names none", async () => {
    const dir = withDefaults("recommends", { guidance_scale: 1.5, num_inference_steps: 3, scheduler: "EulerDiscreteScheduler" });
    const model = td.loadModel(dir);
    expect(model.defaults).toEqual({ guidanceScale: 1.5, numInferenceSteps: 3, scheduler: "EulerDiscreteScheduler" });
    expect(model.scheduler?.className).toBe("EulerDiscreteScheduler");
    expect(model.with({}).defaults).toEqual(model.defaults);
    const pipe = new td.Text2ImagePipeline(model);
    const totals: number[] = [];
    const draw = async (options: Partial<td.GenerateOptions>) => {
      const { images } = await pipe.generate({ prompt: "a cat", generator: new td.Generator(0), onProgress: ({ total }) => totals.push(total), ...options });
      return td.tidy(() => Array.from(images.toFloat32Array()));
    };
    const defaults = await draw({});
    expect(new Set(totals)).toEqual(new Set([3]));
    expect(await draw({ numInferenceSteps: 3, guidanceScale: 1.5, scheduler: model.newScheduler("EulerDiscreteScheduler") })).toEqual(defaults);
    expect(await draw({ guidanceScale: 7.5 })).not.toEqual(defaults);
    model.dispose();
    const cli3 = json(await cli(["generate", "a cat", "--model", dir, "--seed", "0", "--out", file("recommends.png"), "--json"]));
    expect(cli3).toMatchObject({ steps: 3, guidanceScale: 1.5, scheduler: "EulerDiscreteScheduler" });
  });

  it("a recommended guidance interval applies to text-to-image, img2img, inpainting, DiffEdit and InstructPix2Pix calls that give none", async () => {
    const dir = withDefaults("interval", { guidance_scale: 3, num_inference_steps: 4, scheduler: "DDIMScheduler", guidance_interval: [300, 600] });
    const model = td.loadModel(dir);
    expect(model.defaults.guidanceInterval).toEqual([300, 600]);
    const pipe = new td.Text2ImagePipeline(model);
    const draw = async (options: Partial<td.GenerateOptions>) => {
      const { images } = await pipe.generate({ prompt: "a cat", height: 16, width: 16, generator: new td.Generator(0), ...options });
      return td.tidy(() => Array.from(images.toFloat32Array()));
    };
    const byDefault = await draw({});
    expect(await draw({ guidanceInterval: [300, 600] })).toEqual(byDefault);
    expect(await draw({ guidanceInterval: [0, 1000] })).not.toEqual(byDefault);
    // img2img and inpainting take the interval too, the model's when a call gives none; outside it, the conditional pass alone.
    const image = td.rand([1, 3, 16, 16], { generator: new td.Generator(5) });
    const mask = td.cat([td.zeros([1, 1, 16, 8]), td.ones([1, 1, 16, 8])], 3);
    for (const [name, edit] of [
      ["img2img", (o: Partial<td.EditOptions>) => new td.Img2ImagePipeline(model).edit({ prompt: "a cat", image, generator: new td.Generator(0), ...o })],
      ["inpaint", (o: Partial<td.EditOptions>) => new td.InpaintPipeline(model).inpaint({ prompt: "a cat", image, mask, generator: new td.Generator(0), ...o })],
    ] as const) {
      const pixels = async (o: Partial<td.EditOptions>) => {
        const { images } = await edit(o);
        return td.tidy(() => Array.from(images.toFloat32Array()));
      };
      const recommended = await pixels({});
      expect(await pixels({ guidanceInterval: [300, 600] }), name).toEqual(recommended);
      expect(await pixels({ guidanceInterval: [0, 1000] }), name).not.toEqual(recommended);
      expect(await pixels({ guidanceInterval: [2000, 3000] }), name).toEqual(await pixels({ guidanceScale: 1 }));
    }
    // DiffEdit's decoding too (its inversion is unguided), inside a given mask.
    const diffedit = new td.DiffEditPipeline(model);
    const edited = async (o: Partial<td.DiffEditOptions>) => {
      const { images, mask: used, imageMask } = await diffedit.edit({ image, mask, sourcePrompt: "a cat", targetPrompt: "a dog", generator: new td.Generator(0), ...o });
      used.dispose();
      imageMask.dispose();
      return td.tidy(() => Array.from(images.toFloat32Array()));
    };
    const diffeditRecommended = await edited({});
    expect(await edited({ guidanceInterval: [300, 600] })).toEqual(diffeditRecommended);
    expect(await edited({ guidanceInterval: [0, 1000] })).not.toEqual(diffeditRecommended);
    expect(await edited({ guidanceInterval: [2000, 3000] })).toEqual(await edited({ guidanceScale: 1 }));
    // InstructPix2Pix's dual guidance: outside the interval the image+text pass alone, which the
    // guided formula gives with both scales 1 (to rounding: it adds and subtracts the other passes).
    const ip2p = new td.InstructPix2PixPipeline(td.widenInputChannels(model, 4));
    const instructed = async (o: Partial<td.InstructOptions>) => {
      const { images } = await ip2p.edit({ image, instruction: "make it a dog", generator: new td.Generator(0), ...o });
      return td.tidy(() => Array.from(images.toFloat32Array()));
    };
    const instructRecommended = await instructed({});
    expect(await instructed({ guidanceInterval: [300, 600] })).toEqual(instructRecommended);
    expect(await instructed({ guidanceInterval: [0, 1000] })).not.toEqual(instructRecommended);
    const unguided = await instructed({ guidanceInterval: [2000, 3000] });
    const bothScalesOne = await instructed({ guidanceScale: 1, imageGuidanceScale: 1 });
    expect(Math.max(...unguided.map((v, i) => Math.abs(v - bothScalesOne[i])))).toBeLessThan(1e-5);
    expect(unguided).not.toEqual(instructRecommended);
    await expect(instructed({ guidanceInterval: [600, 300] })).rejects.toThrow("guidanceInterval");
    for (const t of [image, mask]) t.dispose();
    model.dispose();
    const info = await cli(["info", "--model", dir]);
    expect(info.stdout).toContain("defaults: guidance 3, 4 steps, DDIMScheduler, guidance at timesteps 300–600");
    const bad = withDefaults("bad-interval", { guidance_interval: [600, 300] });
    expect(() => td.loadModel(bad)).toThrow('model_index.json "torch_diffusion.defaults".guidance_interval must be [low, high] timesteps with low ≤ high but is [600,300]');
  });

  it("bad defaults are a load error naming the key and the file", async () => {
    const dir = withDefaults("bad-defaults", { guidance_scale: "lots" });
    expect(() => td.loadModel(dir)).toThrow(`loadModel: model_index.json "torch_diffusion.defaults".guidance_scale must be a number but is "lots" (${path.join(dir, "model_index.json")})`);
    const unknown = withDefaults("unknown-scheduler", { scheduler: "MagicScheduler" });
    expect(() => td.loadModel(unknown)).toThrow(/loadModel: model_index\.json "torch_diffusion\.defaults\.scheduler" names "MagicScheduler", which is not a scheduler this package has/);
    const info = await cli(["info", "--model", dir]);
    expect(info).toMatchObject({ code: 1, stdout: "" });
    expect(info.stderr).toMatch(/^torch-diffusion: --model: model_index\.json "torch_diffusion\.defaults"\.guidance_scale must be a number/);
  });
});

describe("train: one training record", () => {
  it("training.json holds the run and, as base, the base model's record; no recipe.json or TRAINING.json is copied", async () => {
    const data = file("bags");
    fs.mkdirSync(data);
    for (let i = 0; i < 2; i++) await td.writeImage(td.rand([1, 32, 32], { generator: new td.Generator(i) }), path.join(data, `bag${i}.png`));
    const recipe = JSON.parse(fs.readFileSync(path.join(td.builtinModelPath(), "recipe.json"), "utf8"));
    expect(recipe).toMatchObject({ recipe: "scripts/train-builtin.ts", steps: 30000 });
    expect(fs.existsSync(path.join(td.builtinModelPath(), "TRAINING.json"))).toBe(false);

    const first = file("bags-1");
    const result = await cli(["train", "--data", data, "--caption", "a photo of a bag", "--steps", "1", "--batch", "2", "--out", first, "--json"]);
    const printed = json(result);
    expect(result.stderr).toMatch(/train: 1 steps in [\d.]+ s/);
    const record = JSON.parse(fs.readFileSync(path.join(first, "training.json"), "utf8"));
    expect(printed).toEqual({
      command: "train", out: first, aborted: false, step: 1, resumedFrom: null, meanLoss: expect.any(Number), checkpoints: path.join(first, "checkpoints"),
      timings: { load: timing, train: timing, total: timing }, record,
    });
    expect(record).toMatchObject({ from: td.builtinModelPath(), data, steps: 1, batchSize: 2, base: recipe });
    const records = (dir: string) => fs.readdirSync(dir).filter((f) => /^(training|recipe)\.json$/i.test(f));
    expect(records(first)).toEqual(["training.json"]);
    td.verifyDirectoryChecksums(first);

    // A model trained from a trained model keeps the chain.
    const second = file("bags-2");
    json(await cli(["train", "--model", first, "--data", data, "--caption", "a photo of a bag", "--steps", "1", "--batch", "2", "--out", second, "--json"]));
    expect(records(second)).toEqual(["training.json"]);
    expect(JSON.parse(fs.readFileSync(path.join(second, "training.json"), "utf8"))).toMatchObject({ from: first, base: { from: td.builtinModelPath(), base: recipe } });
  });
});
