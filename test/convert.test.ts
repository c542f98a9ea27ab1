/**
 * From a Hugging Face diffusers folder to images: `torch-diffusion convert` (the exporter the
 * package ships, under the Python it finds) on the tiny diffusers fixtures, then `generate` on
 * the result; raw diffusers folders refused in one line naming `convert`; the built-in model by
 * name from any folder. The exporter needs /usr/bin/python3's torch: without it the conversion
 * tests skip, loudly.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import * as td from "../lib";
import { runCli, type CliResult as Result } from "./helpers/cli";
import { fixtures, withEnv } from "./helpers";

const raw = path.join(fixtures, "diffusers", "tiny-sd"); // model_index.json + safetensors, as save_pretrained writes it
const rawUnet = path.join(fixtures, "diffusers", "tiny-unet"); // one component folder
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "td-convert-"));
const converted = path.join(tmp, "tiny-sd");
const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

const cli = (args: string[]) => runCli(args);

function requireTorch(ctx: TestContext): void {
  if (!hasTorch) {
    console.warn("SKIPPED (convert): /usr/bin/python3 has no torch, which the exporter needs (apt-get install python3-torch)");
    ctx.skip();
  }
}

let conversion: Result;
beforeAll(async () => {
  if (hasTorch) conversion = await withEnv({ TORCH_DIFFUSION_PYTHON: "/usr/bin/python3" }, () => cli(["convert", "--from", raw, "--to", converted]));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("torch-diffusion convert", () => {
  it("exports the diffusers pipeline with the package's exporter: progress on stderr, the folder on stdout, a checksum record", (ctx) => {
    requireTorch(ctx);
    expect(conversion.stderr).not.toMatch(/\n\s+at |Traceback/);
    expect(conversion).toMatchObject({ code: 0, stdout: `${converted}\n` });
    expect(conversion.stderr).toMatch(/^convert: .*tiny-sd -> .*tiny-sd \(float32\) with \/usr\/bin\/python3 \(Python 3[\d.]+, torch [\d.]+\w*\)\n/);
    for (const line of ["convert: export unet (UNet2DConditionModel)", "convert: export vae (AutoencoderKL)", "convert: export text_encoder (CLIPTextModel)", "convert: copy tokenizer"]) {
      expect(conversion.stderr).toContain(`${line}\n`);
    }
    expect(conversion.stderr).toMatch(/convert: wrote .*tiny-sd: scheduler, text_encoder, tokenizer, unet, vae, in [\d.]+ s\n$/);
    const recorded = fs.readFileSync(path.join(converted, td.CHECKSUMS_FILE), "utf8").trim().split("\n").map((line) => line.slice(66));
    expect(recorded).toEqual(expect.arrayContaining(["model_index.json", "unet/model.pt", "vae/model.pt", "text_encoder/model.pt", "tokenizer/vocab.json"]));
    td.verifyDirectoryChecksums(converted);
    // loadModel checks the record: a changed file is refused.
    const copy = path.join(tmp, "tampered");
    fs.cpSync(converted, copy, { recursive: true });
    fs.appendFileSync(path.join(copy, "unet", "config.json"), " ");
    expect(() => td.loadModel(copy)).toThrow(/unet\/config\.json does not match its recorded SHA-256/);
  });

  it("the converted model generates from the command line and the library", async (ctx) => {
    requireTorch(ctx);
    const out = path.join(tmp, "cat.png");
    const result = await cli(["generate", "a cat", "--model", converted, "--steps", "2", "--seed", "0", "--out", out]);
    expect(result).toMatchObject({ code: 0, stdout: `${out}\n` });
    expect((await td.readImage(out)).shape).toEqual([1, 3, 16, 16]);
    const model = td.loadModel(converted);
    expect(model.defaults).toEqual({}); // a converted model recommends nothing: 7.5 and 50 apply
    const { images } = await new td.Text2ImagePipeline(model).generate({ prompt: "a cat", numInferenceSteps: 2, generator: new td.Generator(0) });
    expect(images.shape).toEqual([1, 3, 16, 16]);
    images.dispose();
    model.dispose();
  });

  it("--json prints one object: what was written, with which Python, and how long it took; one component converts too", async (ctx) => {
    requireTorch(ctx);
    const to = path.join(tmp, "unet-bf16");
    const result = await withEnv({ TORCH_DIFFUSION_PYTHON: "/usr/bin/python3" }, () => cli(["convert", "--from", rawUnet, "--to", to, "--dtype", "bfloat16", "--json"]));
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim().split("\n")).toHaveLength(1);
    const json = JSON.parse(result.stdout);
    expect(json).toEqual({
      command: "convert", from: rawUnet, to, kind: "component", dtype: "bfloat16", fusedAttention: false, components: ["unet-bf16"], skipped: {},
      python: "/usr/bin/python3", torch: expect.stringMatching(/^\d+\.\d+/), timings: { export: expect.any(Number), checksums: expect.any(Number), total: expect.any(Number) },
    });
    expect(result.stderr).toContain("is one component: load it with loadComponent");
    const unet = td.loadComponent(to);
    expect(unet.className).toBe("UNet2DConditionModel");
    expect(Object.values(unet.namedParameters())[0].dtype).toBe("bfloat16");
    unet.dispose();
  });

  it("refuses bad options in one line before running Python", async () => {
    const outside = path.join(tmp, "nonempty");
    fs.mkdirSync(outside, { recursive: true });
    fs.writeFileSync(path.join(outside, "notes.txt"), "mine");
    const cases: [string[], string][] = [
      [["convert", "--to", path.join(tmp, "x")], "--from is required"],
      [["convert", "--from", raw], "--to is required"],
      [["convert", "--from", path.join(tmp, "nowhere"), "--to", path.join(tmp, "x")], `--from: no such folder: ${path.join(tmp, "nowhere")}`],
      [["convert", "--from", raw, "--to", path.join(tmp, "x"), "--dtype", "int8"], '--dtype: expected float32, float16, bfloat16 but got "int8"'],
      [["convert", "--from", raw, "--to", outside], `--to: ${outside} exists and is not empty: pick a new folder (only an earlier conversion is overwritten)`],
      [["convert", "--from", raw, "--to", path.join(raw, "out")], "--to must be a folder outside --from"],
      [["convert", "--from", path.join(fixtures, "models", "tiny-sd"), "--to", path.join(tmp, "x")], `--from: ${path.join(fixtures, "models", "tiny-sd")} is already a torch-diffusion model directory (its model_index.json has a "torch_diffusion" section): use it as --model`],
    ];
    for (const [args, message] of cases) expect(await cli(args), args.join(" ")).toEqual({ code: 1, stdout: "", stderr: `torch-diffusion: ${message}\n` });
    expect(fs.existsSync(path.join(tmp, "x"))).toBe(false);
  });

  it("says what to install when no Python with PyTorch is found", async () => {
    const args = ["convert", "--from", raw, "--to", path.join(tmp, "never")];
    const missing = await withEnv({ TORCH_DIFFUSION_PYTHON: path.join(tmp, "no-python") }, () => cli(args));
    expect(missing).toEqual({
      code: 1, stdout: "",
      stderr: `torch-diffusion: convert runs the exporter under Python 3 with PyTorch ≥ 1.13 (no diffusers, transformers or safetensors needed), and found none: TORCH_DIFFUSION_PYTHON=${path.join(tmp, "no-python")}: not found. Fix: point TORCH_DIFFUSION_PYTHON at a Python with PyTorch (pip install torch; on Debian or Ubuntu apt-get install python3-torch)\n`,
    });
    // A Python without torch on PATH, and none at /usr/bin/python3 (the fallback is checked by its own probe: here it is the fake too).
    const bin = path.join(tmp, "bin");
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, "python3"), "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n", { mode: 0o755 });
    const noTorch = await withEnv({ TORCH_DIFFUSION_PYTHON: path.join(bin, "python3") }, () => cli(args));
    expect(noTorch.stderr).toMatch(/^torch-diffusion: convert runs the exporter .* found none: TORCH_DIFFUSION_PYTHON=.*\/bin\/python3: has no torch\. Fix: /);
    const { findPython } = await import("../lib/cli/convert");
    const found = (() => {
      try {
        return findPython({ PATH: bin });
      } catch (error) {
        return (error as Error).message;
      }
    })();
    if (hasTorch) expect(found).toMatchObject({ python: "/usr/bin/python3" }); // python3 on PATH lacks torch: the fallback serves
    else expect(found).toMatch(/python3 on PATH: has no torch; \/usr\/bin\/python3: has no torch\. Fix: install PyTorch for one of them/);
    expect(fs.existsSync(path.join(tmp, "never"))).toBe(false);
  });

  it("reports the exporter's own failure in one line", async (ctx) => {
    requireTorch(ctx);
    const broken = path.join(tmp, "broken");
    fs.cpSync(raw, broken, { recursive: true });
    fs.rmSync(path.join(broken, "unet", "diffusion_pytorch_model.safetensors"));
    const result = await withEnv({ TORCH_DIFFUSION_PYTHON: "/usr/bin/python3" }, () => cli(["convert", "--from", broken, "--to", path.join(tmp, "broken-out")]));
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    const errors = result.stderr.split("\n").filter((l) => l.startsWith("torch-diffusion:"));
    expect(errors).toEqual([expect.stringMatching(/^torch-diffusion: convert: .*broken\/unet: no weights found \(expected diffusion_pytorch_model\.safetensors, model\.safetensors or \*\.bin\); files: \['config\.json'\]$/)]);
    expect(result.stderr).toContain(`convert: failed; removed the partial ${path.join(tmp, "broken-out")}\n`);
    expect(fs.existsSync(path.join(tmp, "broken-out"))).toBe(false); // nothing half-written to mistake for a model
  });
});

describe("a raw diffusers folder where a model directory is wanted", () => {
  const hint = (dir: string) => `torch-diffusion convert --from ${dir} --to OUT`;

  it("loadModel and loadComponent refuse it in one line naming convert", () => {
    expect(() => td.loadModel(raw)).toThrow(
      `loadModel: ${raw} is a Hugging Face diffusers folder (model_index.json has no "torch_diffusion" section; unet/ has diffusion_pytorch_model.safetensors but no model.pt), not a model directory this package runs: convert it once with ${hint(raw)} (needs Python with PyTorch), then use OUT`,
    );
    expect(() => td.loadComponent(rawUnet)).toThrow(`loadComponent: ${rawUnet} is a Hugging Face diffusers folder (it has diffusion_pytorch_model.safetensors but no model.pt)`);
    expect(td.diffusersFolderReason(path.join(fixtures, "models", "tiny-sd"))).toBeNull();
    // Our model_index.json, but a component still in diffusers' form.
    const mixed = path.join(tmp, "mixed");
    fs.cpSync(path.join(fixtures, "models", "tiny-sd"), mixed, { recursive: true });
    for (const file of ["model.pt", "torch_diffusion.json"]) fs.rmSync(path.join(mixed, "vae", file));
    fs.copyFileSync(path.join(raw, "vae", "diffusion_pytorch_model.safetensors"), path.join(mixed, "vae", "diffusion_pytorch_model.safetensors"));
    expect(() => td.loadModel(mixed)).toThrow(`${mixed} is a Hugging Face diffusers folder (vae/ has diffusion_pytorch_model.safetensors but no model.pt)`);
  });

  it("every command that takes --model says so before loading anything", async () => {
    const image = path.join(tmp, "in.png");
    await td.writeImage(td.rand([3, 16, 16], { generator: new td.Generator(0) }), image);
    const commands = [
      ["generate", "a cat"],
      ["edit", "--image", image, "--prompt", "a cat"],
      ["edit", "--method", "diffedit", "--image", image, "--source-prompt", "a dog", "--prompt", "a cat"],
      ["inpaint", "--image", image, "--mask", image, "--prompt", "a cat"],
      ["train", "--data", tmp, "--out", path.join(tmp, "never")],
      ["imagic", "--image", image, "--prompt", "a cat", "--out", path.join(tmp, "never")],
      ["info"],
    ];
    for (const args of commands) {
      const result = await cli([...args, "--model", raw]);
      expect(result.code, args[0]).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr.split("\n")).toHaveLength(2); // one line and its newline
      expect(result.stderr).toMatch(new RegExp(`^torch-diffusion: --model: ${raw}.* is a Hugging Face diffusers folder \\(.*\\).*: convert it once with ${hint(raw).replace(/[/.+-]/g, "\\$&")} `));
    }
  });
});

describe("the built-in model by name", () => {
  it("loadModel('builtin') and fromPretrained('builtin') find the package's model from any folder; a ./builtin folder wins", async () => {
    const cwd = process.cwd();
    const elsewhere = fs.mkdtempSync(path.join(tmp, "project-"));
    process.chdir(elsewhere);
    try {
      expect(td.builtinModelPath()).toBe(path.resolve(__dirname, "..", "models", "builtin"));
      const model = td.loadModel("builtin");
      expect(model.dir).toBe(td.builtinModelPath());
      expect(model.defaults).toEqual({ guidanceScale: 2, numInferenceSteps: 20, scheduler: "DPMSolverMultistepScheduler", guidanceInterval: [200, 900] });
      model.dispose();
      const pipe = td.Text2ImagePipeline.fromPretrained("builtin");
      expect(pipe.model.dir).toBe(td.builtinModelPath());
      pipe.model.dispose();
      const info = await cli(["info", "--model", "builtin"]);
      expect(info.stdout).toContain(`model: ${td.builtinModelPath()}\n  pipeline: StableDiffusionPipeline (format 1, dtype float32, fused attention no)\n  defaults: guidance 2, 20 steps, DPMSolverMultistepScheduler, guidance at timesteps 200–900 (the image commands use them unless given)\n`);
      fs.mkdirSync("builtin");
      expect(() => td.loadModel("builtin")).toThrow(`loadModel: ${path.join(process.cwd(), "builtin", "model_index.json")} is missing`);
    } finally {
      process.chdir(cwd);
    }
  });
});

describe("SDXL", () => {
  it("its networks load, but the pipelines and training refuse an SDXL model in one line instead of failing at the first step", async () => {
    const unet = td.loadComponent(path.join(fixtures, "models", "tiny-unet-sdxl"));
    expect(unet instanceof td.UNet2DConditionModel && unet.needsAddedConditions).toBe(true);
    const sd = td.loadModel(path.join(fixtures, "models", "tiny-sd"));
    const sdxl = sd.with({ unet: unet as td.UNet2DConditionModel });
    try {
      const message = /is an SDXL model \(its U-Net has addition_embed_type "text_time"\), which the pipelines and training do not support yet; its networks load and run directly/;
      expect(() => new td.Text2ImagePipeline(sdxl)).toThrow(message);
      expect(() => new td.InpaintPipeline(sdxl)).toThrow(message);
      await expect(td.fineTune(sdxl, [] as unknown as td.Dataset, { out: path.join(tmp, "never-sdxl") })).rejects.toThrow(message);
    } finally {
      sd.dispose();
      unet.dispose();
    }
  });
});
