/**
 * InstructPix2Pix from a diffusers folder: the tiny `timbrooks/instruct-pix2pix`-style fixture
 * (test/fixtures/diffusers/tiny-ip2p: StableDiffusionInstructPix2PixPipeline, 8-channel U-Net,
 * Euler-ancestral scheduler, a CLIP image processor to skip) through `torch-diffusion convert`,
 * then loadModel, InstructPix2PixPipeline and `torch-diffusion instruct`, against PyTorch:
 * test/fixtures/instruct_pix2pix_ref.json (scripts/fixtures/instruct_pix2pix_ref.py) holds the
 * U-Net's output on fixed inputs and a whole edit sampled as diffusers' pipeline samples it. The
 * exporter needs /usr/bin/python3's torch: without it these tests skip, loudly.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import * as td from "../lib";
import { fixtures, maxRelativeError, withEnv } from "./helpers";
import { runCli, type CliResult } from "./helpers/cli";

interface RefTensor {
  name: string;
  dtype: "float32" | "int64";
  shape: number[];
  data: number[];
}
interface Reference {
  unet: { in_channels: number; cases: { name: string; inputs: RefTensor[]; outputs: RefTensor[] }[] };
  edit: {
    scheduler: string;
    instruction: string;
    seed: number;
    num_inference_steps: number;
    guidance_scale: number;
    image_guidance_scale: number;
    timesteps: number[];
    token_ids: number[][];
    image_uint8: RefTensor;
    latents: RefTensor;
    images: RefTensor;
  };
}

const raw = path.join(fixtures, "diffusers", "tiny-ip2p");
const ref = JSON.parse(fs.readFileSync(path.join(fixtures, "instruct_pix2pix_ref.json"), "utf8")) as Reference;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-ip2p-"));
const converted = path.join(tmp, "tiny-ip2p");
const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;
/** The U-Net against its own TorchScript export of the same weights, as the other model fixtures (models.test.ts). */
const UNET_TOLERANCE = 1e-5;
/** A whole edit, 3 steps at s_T 4 and s_I 1.5, images in [0, 1]: measured 6e-7; changing s_I by 0.1 moves it by 4e-3. */
const EDIT_TOLERANCE = 1e-5;
/** Its final latents (|x| up to 48 with this random U-Net; σ_max 14.6 and s_T 4 amplify float32 rounding): measured 3e-5. */
const LATENT_TOLERANCE = 1e-4;

function requireTorch(ctx: TestContext): void {
  if (!hasTorch) {
    console.warn("SKIPPED (instruct-convert): /usr/bin/python3 has no torch, which the exporter needs (apt-get install python3-torch)");
    ctx.skip();
  }
}

const toTensor = (t: RefTensor) => (t.dtype === "int64" ? td.tensor(BigInt64Array.from(t.data, BigInt), t.shape) : td.tensor(Float32Array.from(t.data), t.shape));
/** The reference's input image, uint8 RGB, as the pipelines take images: float32 in [0, 1]. */
const inputImage = () => td.tidy(() => toTensor(ref.edit.image_uint8).to({ dtype: "float32" }).div(255)); // (1, 3, 16, 16)

let conversion: CliResult;
let model: td.DiffusionModel;
beforeAll(async () => {
  if (!hasTorch) return;
  conversion = await withEnv({ TORCH_DIFFUSION_PYTHON: "/usr/bin/python3" }, () => runCli(["convert", "--from", raw, "--to", converted]));
  if (conversion.code === 0) model = td.loadModel(converted);
});
afterAll(() => {
  model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("InstructPix2Pix from a converted diffusers folder", () => {
  it("convert takes the StableDiffusionInstructPix2PixPipeline folder: the 8-channel U-Net and the rest exported, the image processor skipped", (ctx) => {
    requireTorch(ctx);
    expect(conversion.stderr).not.toMatch(/\n\s+at |Traceback/);
    expect(conversion).toMatchObject({ code: 0, stdout: `${converted}\n` });
    expect(conversion.stderr).toContain("convert: export unet (UNet2DConditionModel)\n");
    expect(conversion.stderr).toMatch(/convert: wrote .*tiny-ip2p: scheduler, text_encoder, tokenizer, unet, vae; skipped feature_extractor \(class 'CLIPImageProcessor' is not supported\), in [\d.]+ s\n$/);
    const index = JSON.parse(fs.readFileSync(path.join(converted, "model_index.json"), "utf8"));
    expect(index._class_name).toBe("StableDiffusionInstructPix2PixPipeline");
    expect(model.unet!.config.in_channels).toBe(8);
    expect(model.latentChannels).toBe(4);
    expect(model.scheduler!.className).toBe(ref.edit.scheduler);
    const pipe = new td.InstructPix2PixPipeline(model);
    expect(pipe.model).toBe(model);
    const textToImage = td.loadModel(path.join(fixtures, "models", "tiny-sd"));
    expect(() => new td.InstructPix2PixPipeline(textToImage)).toThrow("the U-Net takes 4 input channels");
    textToImage.dispose();
  });

  it("its U-Net matches PyTorch on the 8-channel reference inputs", async (ctx) => {
    requireTorch(ctx);
    expect(model.unet!.config.in_channels).toBe(ref.unet.in_channels);
    for (const c of ref.unet.cases) {
      const [sample, timestep, context] = c.inputs.map(toTensor);
      const out = await model.unet!.forward({ sample, timestep, encoderHiddenStates: context });
      expect(out.shape, c.name).toEqual(c.outputs[0].shape);
      expect(maxRelativeError(out.toFloat64Array(), c.outputs[0].data), c.name).toBeLessThanOrEqual(UNET_TOLERANCE);
      // The image channels matter: zeroing them changes the prediction (a trained, not freshly widened, conv_in).
      const noImage = td.tidy(() => td.cat([sample.narrow(1, 0, 4), td.zerosLike(sample.narrow(1, 4, 4))], 1));
      const without = await model.unet!.forward({ sample: noImage, timestep, encoderHiddenStates: context });
      expect(td.tidy(() => without.sub(out).abs().max().item()), c.name).toBeGreaterThan(1e-2);
      for (const t of [sample, timestep, context, out, noImage, without]) t.dispose();
    }
  });

  it("edit() samples what diffusers' StableDiffusionInstructPix2PixPipeline samples (Euler ancestral, dual guidance)", async (ctx) => {
    requireTorch(ctx);
    const e = ref.edit;
    expect(model.tokenizer!.encode([e.instruction, ""]).inputIds).toEqual(e.token_ids);
    const pipe = new td.InstructPix2PixPipeline(model);
    const scheduler = model.newScheduler();
    scheduler.setTimesteps(e.num_inference_steps);
    expect(scheduler.timesteps).toEqual(e.timesteps);
    scheduler.dispose();
    const image = inputImage();
    let latentError = Infinity;
    const { images } = await pipe.edit({
      image, instruction: e.instruction, guidanceScale: e.guidance_scale, imageGuidanceScale: e.image_guidance_scale,
      numInferenceSteps: e.num_inference_steps, generator: new td.Generator(e.seed),
      onProgress: ({ step, total, latents }) => {
        if (step === total) latentError = maxRelativeError(latents.toFloat64Array(), e.latents.data);
      },
    });
    expect(latentError).toBeLessThanOrEqual(LATENT_TOLERANCE); // before the decoder's clamp to [0, 1]
    expect(images.shape).toEqual(e.images.shape);
    expect(maxRelativeError(images.toFloat64Array(), e.images.data)).toBeLessThanOrEqual(EDIT_TOLERANCE);
    for (const t of [image, images]) t.dispose();
  });

  it("torch-diffusion instruct edits with the converted model; with the reference's seed and scales it writes the reference image", async (ctx) => {
    requireTorch(ctx);
    const input = path.join(tmp, "in.png");
    const image = inputImage();
    await td.writeImage(image.squeeze(0), input);
    image.dispose();
    const quick = await runCli(["instruct", "--model", converted, "--image", input, "--instruction", "make it a bag", "--steps", "2", "--out", path.join(tmp, "quick.png")]);
    expect(quick.code, quick.stderr).toBe(0);
    expect((await td.readImage(path.join(tmp, "quick.png"))).shape).toEqual([1, 3, 16, 16]);

    const e = ref.edit;
    const out = path.join(tmp, "edited.png");
    const args = ["--steps", `${e.num_inference_steps}`, "--seed", `${e.seed}`, "--guidance", `${e.guidance_scale}`, "--image-guidance", `${e.image_guidance_scale}`];
    const result = await runCli(["instruct", "--model", converted, "--image", input, "--instruction", e.instruction, ...args, "--json", "--out", out]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ command: "instruct", images: [out], stepsRun: e.num_inference_steps, guidanceScale: e.guidance_scale, imageGuidanceScale: e.image_guidance_scale });
    const written = await td.readImage(out);
    // The PNG holds 8 bits: within half a level of the reference, plus the edit tolerance.
    expect(maxRelativeError(written.toFloat64Array(), e.images.data)).toBeLessThanOrEqual(0.5 / 255 + EDIT_TOLERANCE);
    written.dispose();
  });
});
